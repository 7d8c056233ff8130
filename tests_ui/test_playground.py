"""The Playground: a streamed chat (tokens arrive, loading shown apart, stop), safe markdown."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Page, expect
from ui_support import Pages, Service, screenshot


def choose(page: Page, model: str, extra: dict[str, object]) -> None:
    """Pick the model and put test knobs in the extra parameters."""
    page.get_by_label("Model", exact=True).select_option(model)
    page.locator("summary").click()
    page.get_by_label("Extra parameters").fill(json.dumps(extra))


def test_streamed_chat_shows_tokens_as_they_arrive(
    service: Service, pages: Pages, tmp_path: Path
) -> None:
    """Tokens appear while the answer streams; the loading messages are shown apart."""
    page = pages.open(service.url + "/ui/playground")
    choose(page, "chat-a", {"x_chunks": 12, "x_interval_ms": 250})
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("Message").fill("<script>window.__pwned=1</script> hello **there**")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator("[data-role=answer]")).to_contain_text("tok0", timeout=30_000)
    assert answer.get_attribute("data-state") == "streaming"  # more tokens are still to come
    expect(answer.locator("[data-role=answer]")).to_contain_text("tok11", timeout=30_000)
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator("[data-role=reasoning]")).to_contain_text("Done!")
    expect(answer.locator("[data-role=stats]")).to_contain_text("12 tokens")
    expect(page.locator(".msg.user")).to_contain_text("<script>window.__pwned=1</script>")
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "playground-1280", tmp_path)
    narrow = pages.open(service.url + "/ui/playground", width=390, height=844, dark=True)
    expect(narrow.get_by_label("Model", exact=True)).to_have_value("chat-a")
    screenshot(narrow, "playground-390-dark", tmp_path)


def test_stop_ends_a_running_answer(service: Service, pages: Pages) -> None:
    """Stop aborts the stream: the answer keeps what came and says it was stopped."""
    page = pages.open(service.url + "/ui/playground")
    choose(page, "chat-b", {"x_chunks": 500, "x_interval_ms": 100})
    page.get_by_label("Message").fill("go on")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    expect(answer.locator("[data-role=answer]")).to_contain_text("tok1", timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator("[data-role=stats]")).to_contain_text("stopped")
    assert "tok499" not in answer.inner_text()


def test_speech_and_embeddings_follow_capabilities(service: Service, pages: Pages) -> None:
    """A model that speaks gets a Speech tab that plays audio; embeddings show vectors."""
    page = pages.open(service.url + "/ui/playground?model=chat-b&tab=embeddings")
    expect(page.get_by_role("tab", name="Speech")).to_have_count(0)
    page.get_by_label("Text to embed").fill("one\ntwo")
    page.get_by_role("button", name="Embed").click()
    expect(page.locator("[data-role=embeddings-result]")).to_contain_text("2 vector(s)",
                                                                          timeout=30_000)
    page.get_by_label("Model", exact=True).select_option("speaker")
    page.get_by_role("tab", name="Speech").click()
    page.get_by_label("Text to speak").fill("hello")
    page.get_by_role("button", name="Speak").click()
    expect(page.locator("[data-role=speech-result] audio")).to_have_count(1, timeout=30_000)
    expect(page.locator("[data-role=speech-result]")).to_contain_text("audio/mpeg")


def test_markdown_renders_safely(service: Service, pages: Pages) -> None:
    """Markdown becomes elements; HTML in it stays text; only http(s) links are made."""
    page = pages.open(service.url + "/ui/playground")
    expect(page.get_by_label("Model", exact=True)).to_have_value("chat-a")
    result = page.evaluate("""async () => {
        const { render } = await import('/ui/markdown.js');
        const el = render('# Title\\n\\n<img src=x onerror="window.__pwned=1">\\n\\n'
          + '```python\\nprint("<b>")\\n```\\n- **bold** and `code`\\n- [ok](https://example.com) '
          + '[bad](javascript:alert(1))');
        document.body.append(el);
        return { img: el.querySelectorAll('img').length,
                 pre: el.querySelector('pre code').textContent,
                 strong: el.querySelector('li strong').textContent,
                 links: [...el.querySelectorAll('a')].map((a) => a.href),
                 text: el.textContent, items: el.querySelectorAll('li').length };
    }""")
    assert result["img"] == 0 and '<img src=x onerror="window.__pwned=1">' in result["text"]
    assert result["pre"] == 'print("<b>")'
    assert result["strong"] == "bold" and result["items"] == 2
    assert result["links"] == ["https://example.com/"]
    assert "[bad](javascript:alert(1))" in result["text"]
    assert page.evaluate("window.__pwned") is None
