"""The Logs page: history on open, live lines, a model's own log, filter and pause."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from playwright.sync_api import expect
from ui_support import Pages, Service, screenshot


def post(service: Service, path: str, body: dict[str, object]) -> bytes:
    """A POST to llamaswap from the test itself (a client other than the page)."""
    request = urllib.request.Request(service.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return bytes(response.read())


def test_log_lines_arrive_live_and_filter(service: Service, pages: Pages, tmp_path: Path) -> None:
    """The proxy log shows its history, then a new line live; the filter narrows it."""
    page = pages.open(service.url + "/ui/logs")
    view = page.locator("#log-view")
    expect(view).to_contain_text("llamaswap listening on")
    post(service, "/v1/chat/completions",
         {"model": "chat-b", "messages": [{"role": "user", "content": "<b>hi</b>"}]})
    expect(view).to_contain_text('"POST /v1/chat/completions HTTP/1.1" 200', timeout=30_000)
    page.get_by_label("Filter").fill("chat/completions")
    expect(view.locator(".line")).to_have_count(1)
    assert page.url.endswith("/ui/logs?source=proxy&q=chat%2Fcompletions")
    page.get_by_label("Filter").fill("")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("[data-role=info]")).to_contain_text("paused")
    screenshot(page, "logs-1280", tmp_path)
    narrow = pages.open(service.url + "/ui/logs", width=390, height=844)
    expect(narrow.locator("#log-view")).to_contain_text("llamaswap listening on")
    screenshot(narrow, "logs-390", tmp_path)


def test_a_models_own_log_by_deep_link(service: Service, pages: Pages) -> None:
    """/ui/logs?source=<model> streams that model's output, history included."""
    post(service, "/v1/chat/completions",
         {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]})
    page = pages.open(service.url + "/ui/logs?source=chat-a")
    expect(page.get_by_label("Log")).to_have_value("chat-a")
    expect(page.locator("#log-view .line").first).to_be_visible(timeout=30_000)
    assert "llamaswap listening on" not in page.locator("#log-view").inner_text()
