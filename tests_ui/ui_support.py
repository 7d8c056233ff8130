"""What the browser tests share: the llamaswap command on port 0, pages that record JS errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page

from llamaswap.testing.ports import free_port_block

PY = sys.executable
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Where screenshots go: docs/ui when regenerating the documentation, else a temporary folder.
SCREENSHOTS = os.environ.get("UI_SCREENSHOTS", "")
STARTED = re.compile(r"LlamaSwapSite starting on (\d+)")
RESPONDER = f"{PY} -m llamaswap.testing.responder --port ${{PORT}} --model ${{MODEL_ID}}"

CONFIG = """
healthCheckTimeout: 20
startPort: {start_port}
captureBuffer: 5
performance: {{every: 5s}}
{extra}
macros:
  responder: "{responder}"
models:
  chat-a:
    name: Chat model A
    description: "Fast answers <img src=x onerror=window.__pwned=1>"
    cmd: ${{responder}}
    aliases: [gpt-4o-mini]
    capabilities: {{in: [text], out: [text], context: 8192}}
    sendLoadingState: true
  chat-b:
    name: Chat model B
    cmd: ${{responder}}
  speaker:
    name: Speech model
    cmd: ${{responder}}
    capabilities: {{in: [text], out: [audio]}}
  hidden:
    cmd: ${{responder}}
    unlisted: true
profiles:
  office:
    description: work hours
    pins: {{chat: chat-b}}
routing:
  router:
    use: group
    settings:
      groups:
        chats: {{swap: true, exclusive: false, members: [chat-a, chat-b]}}
  scheduler:
    use: fifo
"""


class Service:
    """A running ``llamaswap`` command and where it listens."""

    def __init__(self, tmp: Path, extra: str = "", port: int = 0) -> None:
        """Write the config, start the command, wait for its "starting on <port>" line.

        ``port`` 0 lets the system choose; another value restarts on a known port.
        """
        cfg = tmp / "llamaswap.yaml"
        cfg.write_text(CONFIG.format(start_port=free_port_block(), extra=extra,
                                     responder=RESPONDER))
        self.output: list[str] = []
        self._port: int | None = None
        self._listening = threading.Event()
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen(
            [PY, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             "llamaswap", "--config", str(cfg), "--listen", f"tcp:{port}:interface=127.0.0.1"],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(60) or self._port is None:
            self.stop()
            raise RuntimeError("llamaswap did not start:\n" + "".join(self.output[-40:]))
        self.port = self._port
        self.url = f"http://127.0.0.1:{self._port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            found = STARTED.search(line)
            if found and self._port is None:
                self._port = int(found.group(1))
                self._listening.set()
        self._listening.set()

    def stop(self) -> None:
        """Stop the command (and so its models) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Pages:
    """Opens pages at a viewport; records every JavaScript error they raise."""

    def __init__(self, browser: Browser) -> None:
        """Pages come from fresh browser contexts of ``browser``."""
        self.browser = browser
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        self.contexts: list[Any] = []

    def open(self, url: str, width: int = 1280, height: int = 800, dark: bool = False) -> Page:
        """A new page at ``url`` in its own context (own localStorage)."""
        context = self.browser.new_context(viewport={"width": width, "height": height},
                                           color_scheme="dark" if dark else "light")
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.goto(url)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if any(p.search(message.text) for p in self.allowed):
            return
        self.errors.append(f"console error: {message.text}")

    def close(self) -> None:
        """Close every context."""
        for context in self.contexts:
            context.close()


def screenshot(page: Page, name: str, folder: Path) -> None:
    """Save ``<name>.png`` in ``$UI_SCREENSHOTS`` (``docs/ui`` for the docs), else ``folder``."""
    target = Path(SCREENSHOTS) if SCREENSHOTS else folder
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"))
