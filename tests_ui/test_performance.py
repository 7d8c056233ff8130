"""The Performance page: system charts, request figures from /metrics, the scheduler's queue."""

from __future__ import annotations

import datetime
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


def test_gpu_samples_become_charts(service: Service, pages: Pages) -> None:
    """GPU samples get utilisation, memory and temperature charts.

    No NVIDIA GPU is available to the tests, so this one answers /api/performance with a
    canned sample in the documented format (the rest of the page talks to llamaswap).
    """
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    sample = {"enabled": True, "sys_stats": None, "gpu_stats": [
        {"timestamp": now, "id": 0, "name": "<b>H100</b>", "uuid": "GPU-1", "temp_c": 61,
         "vram_temp_c": None, "gpu_util_pct": 87.0, "mem_util_pct": 40.0, "mem_used_mb": 2048.0,
         "mem_total_mb": 8192.0, "fan_speed_pct": None, "power_draw_w": 312.5}]}
    page = pages.browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.on("pageerror", lambda error: pages.errors.append(f"page error: {error}"))
    page.route("**/api/performance*", lambda route: route.fulfill(json=sample))
    page.goto(service.url + "/ui/performance")
    expect(page.locator('[data-chart="gpu0-util"] [data-role=now]')).to_have_text("87%")
    expect(page.locator('[data-chart="gpu0-util"]')).to_contain_text("<b>H100</b>")
    expect(page.locator('[data-chart="gpu0-mem"] [data-role=now]')).to_have_text("25%")
    expect(page.locator('[data-chart="gpu0-temp"] [data-role=now]')).to_have_text("61°C")
    expect(page.locator('[data-stat="GPUs"] .v')).to_have_text("1")
    page.context.close()


def test_model_starts_are_counted_and_timed(service: Service, pages: Pages) -> None:
    """Each model start shows in the table with its mean time to ready."""
    page = pages.open(service.url + "/ui/models")
    card = page.locator('[data-model="chat-a"]')
    card.get_by_role("button", name="Load", exact=True).click()
    expect(card.locator("[data-role=state]")).to_have_text("ready", timeout=30_000)
    page.get_by_role("link", name="Performance").click()
    row = page.locator('[data-swaps="chat-a"]')
    expect(row).to_contain_text("chat-a", timeout=30_000)
    expect(row.locator("td").nth(2)).to_have_text("1")
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\d[\d.]* (ms|s)$"))
