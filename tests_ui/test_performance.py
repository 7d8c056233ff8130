"""The Performance page: system charts, request figures from /metrics, the scheduler's queue."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from playwright.sync_api import expect
from ui_support import Pages, Service, screenshot


def test_charts_figures_and_queue(service: Service, pages: Pages, tmp_path: Path) -> None:
    """CPU and memory get samples; a finished request counts; the fifo snapshot is shown."""
    body = {"model": "chat-b", "messages": [{"role": "user", "content": "count me"}]}
    request = urllib.request.Request(service.url + "/v1/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    page = pages.open(service.url + "/ui/performance")
    expect(page.locator('[data-stat="requests"] .v')).to_have_text("1", timeout=30_000)
    expect(page.locator('[data-stat="swaps"] .v')).to_have_text("1")
    expect(page.locator('[data-stat="generated tokens"] .v')).not_to_have_text("0")
    expect(page.locator('[data-chart="cpu"] [data-role=now]')).to_have_text(
        re.compile(r"^[\d.,]+%$"), timeout=30_000)
    expect(page.locator('[data-chart="mem"] [data-role=now]')).to_contain_text("%")
    expect(page.locator("#perf-queue")).to_contain_text("scheduler: fifo")
    expect(page.locator("#perf-queue")).to_contain_text("Nobody is waiting.")
    screenshot(page, "performance-1280", tmp_path)
    narrow = pages.open(service.url + "/ui/performance", width=390, height=844, dark=True)
    expect(narrow.locator('[data-chart="cpu"] [data-role=now]')).to_contain_text("%",
                                                                               timeout=30_000)
    screenshot(narrow, "performance-390-dark", tmp_path)
