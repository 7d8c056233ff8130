"""The Activity page: a row appears live and opens its capture; in-flight requests cancel."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import expect
from ui_support import Pages, Service, screenshot

HOSTILE = "<img src=x onerror=window.__pwned=1>"


def chat(service: Service, body: dict[str, object]) -> bytes:
    """A chat completion sent by the test itself; its whole answer."""
    request = urllib.request.Request(service.url + "/v1/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return bytes(response.read())


def test_row_appears_live_and_opens_its_capture(
    service: Service, pages: Pages, tmp_path: Path
) -> None:
    """A streamed chat shows up without reloading; its capture shows bodies as text and SSE."""
    page = pages.open(service.url + "/ui/activity")
    expect(page.locator("#activity-rows")).to_contain_text("No requests yet.")
    chat(service, {"model": "chat-a", "stream": True, "stream_options": {"include_usage": True},
                   "messages": [{"role": "user", "content": HOSTILE}]})
    row = page.locator("#activity-rows tr[data-row]").first
    expect(row).to_contain_text("chat-a", timeout=30_000)
    expect(row).to_contain_text("/v1/chat/completions")
    expect(row).to_contain_text("200")
    expect(row.locator("[data-role=ttft]")).to_have_text(re.compile(r"^\d[\d.]* (ms|s)$"))
    page.get_by_label("Status").select_option("error")
    expect(page.locator("#activity-rows tr[data-row]")).to_have_count(0)
    page.get_by_label("Status").select_option("")
    screenshot(page, "activity-1280", tmp_path)
    row.click()
    box = page.get_by_role("dialog")
    expect(box).to_contain_text("Request body")
    expect(box).to_contain_text(HOSTILE)
    expect(box.locator("[data-role=sse]")).to_contain_text("server-sent event(s)")
    expect(box).to_contain_text("tok0")
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "activity-capture-1280", tmp_path)
    page.keyboard.press("Escape")
    expect(box).to_have_count(0)
    narrow = pages.open(service.url + "/ui/activity", width=390, height=844, dark=True)
    expect(narrow.locator("#activity-rows tr[data-row]")).to_have_count(1)
    screenshot(narrow, "activity-390-dark", tmp_path)


def test_in_flight_request_is_shown_and_cancelled(service: Service, pages: Pages) -> None:
    """A slow stream is listed here and on its model's card; Cancel ends it for its client."""
    chat(service, {"model": "chat-b", "messages": [{"role": "user", "content": "warm up"}]})
    page = pages.open(service.url + "/ui/activity")
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(chat(service, {"model": "chat-b", "stream": True, "x_chunks": 600,
                                          "x_interval_ms": 100,
                                          "messages": [{"role": "user", "content": "slow"}]}))
        except Exception as error:  # the cancelled stream breaks off
            outcome.append(error)

    client = threading.Thread(target=slow)
    client.start()
    entry = page.locator("#inflight tr[data-inflight]")
    expect(entry).to_contain_text("chat-b", timeout=30_000)
    expect(entry).to_contain_text("answering")
    models = pages.open(service.url + "/ui/models")
    expect(models.locator('[data-model="chat-b"] [data-role=load]')).to_contain_text(
        "1 in flight")
    entry.get_by_role("button", name="Cancel").click()
    expect(page.locator("#inflight")).to_contain_text("Nothing in flight.", timeout=30_000)
    client.join(60)
    assert outcome and not (isinstance(outcome[0], bytes) and b"[DONE]" in outcome[0])
