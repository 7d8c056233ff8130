"""The app shell: old entry points lead to it, pages switch, streams return after a restart."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect
from ui_support import Pages, Service

# While llamaswap is down, Chromium logs each failed reconnection attempt.
DOWN = re.compile(r"Failed to load resource: net::ERR_CONNECTION_REFUSED")


def test_entry_points_lead_to_pages(service: Service, pages: Pages) -> None:
    """/, /ui, /upstream and a browser's /logs end on UI pages; the nav switches pages."""
    page = pages.open(service.url + "/")
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    for path, heading in (("/ui", "Models"), ("/upstream", "Models"), ("/logs", "Models"),
                          ("/ui/activity", "Activity")):
        page.goto(service.url + path)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    assert page.url == service.url + "/ui/activity"
    page.get_by_role("link", name="Logs").click()
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    assert page.url.startswith(service.url + "/ui/logs")
    page.go_back()
    expect(page.get_by_role("heading", name="Activity")).to_be_visible()


def test_live_view_reconnects_after_restart(
    start_service: Callable[..., Service], pages: Pages
) -> None:
    """Stopping llamaswap shows "disconnected"; started again, the page is live and current."""
    first = start_service()
    pages.allowed.append(DOWN)
    page = pages.open(first.url + "/ui/models")
    expect(page.locator("#conn")).to_have_text("live")
    first.stop()
    expect(page.locator("#conn")).to_have_text("disconnected, reconnecting…")
    second = start_service(port=first.port)
    expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
    card = page.locator('[data-model="chat-b"]')
    card.get_by_role("button", name="Load", exact=True).click()
    expect(card.locator("[data-role=state]")).to_have_text("ready", timeout=30_000)
    assert second.url == first.url
