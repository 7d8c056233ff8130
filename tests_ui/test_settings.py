"""Settings: switching the profile (seen by every open page), the version, the metrics link."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from playwright.sync_api import expect
from ui_support import Pages, Service, screenshot


def test_switch_profile_and_see_version(service: Service, pages: Pages, tmp_path: Path) -> None:
    """Choosing a profile activates it in llamaswap; another page sees the change live."""
    page = pages.open(service.url + "/ui/settings")
    other = pages.open(service.url + "/ui/settings")
    expect(page.locator('[data-profile=""] input')).to_be_checked()
    expect(page.locator('[data-profile="office"]')).to_contain_text("chat → chat-b")
    page.locator('[data-profile="office"] input').check()
    expect(page.locator('[data-profile="office"]')).to_have_class("profile active")
    with urllib.request.urlopen(service.url + "/api/profiles", timeout=30) as response:
        assert json.loads(response.read())["active"] == "office"
    expect(other.locator('[data-profile="office"] input')).to_be_checked()
    expect(page.locator('[data-version="version"]')).not_to_be_empty()
    expect(page.get_by_role("link", name="Prometheus metrics (/metrics)")).to_have_attribute(
        "href", "/metrics")
    screenshot(page, "settings-1280", tmp_path)
    page.locator('[data-profile=""] input').check()
    expect(other.locator('[data-profile=""] input')).to_be_checked()
    narrow = pages.open(service.url + "/ui/settings", width=390, height=844, dark=True)
    expect(narrow.locator('[data-profile="office"]')).to_be_visible()
    screenshot(narrow, "settings-390-dark", tmp_path)
