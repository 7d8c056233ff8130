"""The Models page: live states, load and unload without reloading, groups, unlisted."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect
from ui_support import Pages, Service, screenshot


def test_load_and_unload_a_model_live(service: Service, pages: Pages) -> None:
    """Load shows the model starting then ready without a reload; Unload stops it."""
    page = pages.open(service.url + "/")
    assert page.url.endswith("/ui/")
    card = page.locator('[data-model="chat-a"]')
    expect(card.locator("[data-role=state]")).to_have_text("stopped")
    expect(page.get_by_label("Show unlisted")).to_be_visible()  # "hidden" is unlisted
    expect(card).to_contain_text("Chat model A")
    expect(card).to_contain_text("gpt-4o-mini")
    card.get_by_role("button", name="Load", exact=True).click()
    expect(card.locator("[data-role=state]")).to_have_text("ready", timeout=30_000)
    expect(page.locator("#conn")).to_have_text("live")
    card.get_by_role("button", name="Unload", exact=True).click()
    expect(card.locator("[data-role=state]")).to_have_text("stopped", timeout=30_000)


def test_description_is_text_groups_and_unlisted(
    service: Service, pages: Pages, tmp_path: Path
) -> None:
    """Hostile text stays text; the group is shown; unlisted models appear when asked."""
    page = pages.open(service.url + "/ui/models")
    card = page.locator('[data-model="chat-a"]')
    expect(card).to_contain_text("<img src=x onerror=window.__pwned=1>")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    expect(page.locator('[data-group="chats"]')).to_contain_text("chat-b")
    expect(page.locator('[data-model="hidden"]')).to_have_count(0)
    page.get_by_label("Show unlisted").check()
    expect(page.locator('[data-model="hidden"]')).to_have_count(1)
    screenshot(page, "models-1280", tmp_path)
    narrow = pages.open(service.url + "/ui/models", width=390, height=844, dark=True)
    expect(narrow.locator('[data-model="chat-a"]')).to_be_visible()
    screenshot(narrow, "models-390-dark", tmp_path)
