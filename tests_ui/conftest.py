"""Browser tests of the web UI: the real llamaswap command on port 0, headless Chromium.

The service runs as a child process (``twistd -n llamaswap``) with
``llamaswap.testing.responder`` upstreams; Playwright drives Debian's ``chromium``
(``CHROMIUM`` overrides the path). Every page fails its test on a JavaScript error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright
from ui_support import CHROMIUM, CHROMIUM_ARGS, Pages, Service


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """One Playwright driver for the session."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM)")
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start llamaswap with the test config (plus ``extra`` top-level YAML); stopped after."""
    started: list[Service] = []

    def start(extra: str = "", port: int = 0) -> Service:
        svc = Service(tmp_path, extra, port)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture
def service(start_service: Callable[..., Service]) -> Service:
    """llamaswap with the test config and no API keys."""
    return start_service()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    """Page opener; the test fails if any page logged a JavaScript error."""
    opener = Pages(browser)
    yield opener
    opener.close()
    assert opener.errors == []


