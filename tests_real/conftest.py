"""Fixtures for end-to-end tests with llama.cpp's real ``llama-server`` behind llamaswap."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(
    os.environ.get("LLAMASWAP_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llamaswap"
)


@pytest.fixture(scope="session")
def llama_server() -> str:
    """Path of a built llama-server (built into the cache on first use, ~10 minutes)."""
    given = os.environ.get("LLAMA_SERVER")
    if given:
        return given
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-llama-server")],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def gguf_models() -> dict[str, Path]:
    """The tiny and the big test models, synthesized once into the cache."""
    models = {}
    for size in ("tiny", "big"):
        path = CACHE / "models" / f"{size}.gguf"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "make-test-model"), str(path) + ".tmp",
                 "--size", size],
                check=True, capture_output=True,
            )
            os.replace(str(path) + ".tmp", path)
        models[size] = path
    return models


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningService:
    """A ``twistd -n llamaswap`` child process whose output is read line by line."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "llamaswap", "--config", str(config),
             "--listen", f"tcp:{self.port}:interface=127.0.0.1"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for_log(r"listening on", timeout=60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_log(self, pattern: str, timeout: float = 30) -> str:
        """Block until a new output line matches ``pattern``; fail with the output on timeout."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                tail = "".join(self.output[-40:])
                raise AssertionError(
                    f"no log line matching {pattern!r} in {timeout}s:\n{tail}"
                ) from None
            if regex.search(line):
                return line

    def llama_servers(self) -> list[psutil.Process]:
        """Every llama-server process descending from this llamaswap."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if _cmdline(c)[:1] and _cmdline(c)[0].endswith("llama-server")]

    def stop(self) -> int:
        """SIGTERM llamaswap and wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def live_llama_servers(binary: str) -> list[psutil.Process]:
    """Every running process executing ``binary`` (to prove none outlives llamaswap)."""
    found = []
    for proc in psutil.process_iter():
        cmd = _cmdline(proc)
        if cmd and cmd[0] == binary and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def live_servers():  # type: ignore[no-untyped-def]
    """The function that lists running llama-server processes of a binary."""
    return live_llama_servers


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[object]:
    """Start llamaswap on a config text; stop it (and check it leaves nothing) afterwards."""
    started: list[RunningService] = []

    def start(config_text: str) -> RunningService:
        config = tmp_path / "config.yaml"
        config.write_text(config_text)
        service = RunningService(config, tmp_path)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
