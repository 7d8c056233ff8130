"""The UI with apiKeys: it asks for a key, shows no data without one, keeps it, sends it."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect
from ui_support import Pages, Service

# Chromium itself logs each refused request; those 401s are what this test expects.
REFUSED = re.compile(r"Failed to load resource: the server responded with a status of 401")


def test_key_is_asked_once_kept_and_sent(
    start_service: Callable[..., Service], pages: Pages
) -> None:
    """No data before a valid key; a wrong key is refused; the right one is kept across reloads."""
    service = start_service("apiKeys: [sk-ui-test]")
    pages.allowed.append(REFUSED)
    page = pages.open(service.url + "/ui/models")
    form = page.locator("form")
    expect(form).to_contain_text("API key")
    expect(page.locator("[data-model]")).to_have_count(0)
    assert "Chat model A" not in page.content()
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Continue").click()
    expect(form).to_contain_text("That key was refused.")
    expect(page.locator("[data-model]")).to_have_count(0)
    page.get_by_label("API key").fill("sk-ui-test")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator('[data-model="chat-a"]')).to_contain_text("Chat model A")
    expect(page.locator("#conn")).to_have_text("live")
    page.reload()
    expect(page.locator('[data-model="chat-a"]')).to_contain_text("Chat model A")
    assert page.evaluate("localStorage.getItem('llamaswap.apiKey')") == "sk-ui-test"
    assert "sk-ui-test" not in "".join(service.output)  # never in a URL, so never logged
