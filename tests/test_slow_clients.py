"""Slow clients against the ``llamaswap`` command under a low open-file limit (issue 21).

The service runs as its own process with a soft and hard open-file limit of 128; three
hundred connections send a request head a byte at a time and reconnect whenever they are
closed. They exhaust the descriptors over and over; the head deadline cuts them, so chat
requests from a normal client keep being answered, and the logs stay short and clean.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from llamaswap.testing.ports import free_port_block

LIMIT = 128
SLOW = 300
RECONNECT = (0.05, 0.5)  # seconds before a closed slow client comes back
WANTED = 5
HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
clientTimeouts: {{requestHeader: 2, requestBody: 2, idle: 5}}
models:
  a:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model a
"""

# Run the command with a lowered soft and hard RLIMIT_NOFILE (so raising it changes nothing).
LAUNCH = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
    "from llamaswap.tap import main; sys.argv[0] = 'llamaswap'; main()"
)


class Command(ProcessProtocol):
    """The ``llamaswap`` command: collects its output, tells when a line appears and ends."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.out = b""
        self.err = b""
        self.ended: Deferred[None] = Deferred()
        self.waiting: list[tuple[bytes, Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:
        """Collect stdout (the proxy log); fire waiters whose marker arrived."""
        self.out += data
        for marker, d in list(self.waiting):
            if marker in self.out:
                self.waiting.remove((marker, d))
                d.callback(None)

    def errReceived(self, data: bytes) -> None:
        """Collect stderr (critical lines only)."""
        self.err += data

    def wait_for(self, marker: bytes, timeout: float) -> Deferred[None]:
        """Fires once ``marker`` is on stdout; fails after ``timeout`` seconds."""
        d: Deferred[None] = Deferred()
        if marker in self.out:
            d.callback(None)
        else:
            self.waiting.append((marker, d))
        return d.addTimeout(timeout, reactor)

    def processEnded(self, reason: Failure) -> None:
        """The command exited."""
        self.ended.callback(None)


class SlowClient(Protocol):
    """Sends a request head a byte every 0.2 s; reconnects whenever the server closes."""

    def __init__(self, attack: Attack) -> None:
        """Belongs to ``attack``."""
        self.attack = attack
        self.received = b""
        self.sent = 0
        self.loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        """Start trickling."""
        self.loop = LoopingCall(self.trickle)
        self.loop.clock = reactor
        self.loop.start(0.2)

    def trickle(self) -> None:
        """One more byte of a head that never ends."""
        assert self.transport is not None
        self.transport.write(HEAD[self.sent % len(HEAD) : self.sent % len(HEAD) + 1])
        self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        """Keep what the server said."""
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        """Count how it ended, then come back (while the attack lasts)."""
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.attack.closed(self)


class Attack(ClientFactory):
    """``SLOW`` slow clients that keep coming back."""

    def __init__(self, port: int) -> None:
        """Against 127.0.0.1:``port``."""
        self.port = port
        self.running = True
        self.cut: list[bytes] = []
        self.refused = 0
        self.open: set[SlowClient] = set()

    def buildProtocol(self, addr: Any) -> SlowClient:
        """A new slow client."""
        client = SlowClient(self)
        self.open.add(client)
        return client

    def connect(self) -> None:
        """One more connection."""
        reactor.connectTCP("127.0.0.1", self.port, self)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        """Try again a moment later."""
        if self.running:
            reactor.callLater(random.uniform(*RECONNECT), self.connect)

    def closed(self, client: SlowClient) -> None:
        """The server closed a slow client: a 408 (cut at the deadline) or nothing (refused)."""
        self.open.discard(client)
        if client.received.startswith(b"HTTP/1.1 408"):
            self.cut.append(client.received)
        else:
            self.refused += 1
        if self.running:
            reactor.callLater(random.uniform(*RECONNECT), self.connect)

    def stop(self) -> None:
        """No more reconnecting; close what is open."""
        self.running = False
        for client in list(self.open):
            if client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]


@pytest_twisted.async_yield_fixture
async def command(tmp_path: Path) -> AsyncIterator[tuple[Command, int]]:
    """The ``llamaswap`` command with a 128 open-file limit, and its port; stopped after."""
    base = free_port_block(9)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG.format(start_port=base + 1, py=sys.executable))
    proto = Command()
    args = [sys.executable, "-c", LAUNCH, "--config", str(cfg),
            "--listen", f"tcp:{base}:interface=127.0.0.1"]  # fmt: skip
    process = reactor.spawnProcess(proto, sys.executable, args, env=None, path=str(tmp_path))
    await proto.wait_for(b"llamaswap listening", 30)
    yield proto, base
    if proto.ended.called:
        return
    process.signalProcess("TERM")
    await proto.ended.addTimeout(60, reactor)


async def chat(port: int) -> bool:
    """One chat on a fresh connection: True when model ``a`` answered it."""
    try:
        response = await treq.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "a", "messages": [{"role": "user", "content": "hi"}]},
            persistent=False, timeout=5,
        )  # fmt: skip
        if response.code != 200:
            return False
        return bool(json.loads(await response.content())["model"] == "a")
    except Exception:
        return False


@pytest_twisted.ensureDeferred
async def test_slow_clients_are_cut_and_normal_requests_keep_succeeding(
    command: tuple[Command, int],
) -> None:
    """Descriptors run out again and again; slow heads get a 408; chats keep succeeding."""
    proto, port = command
    started = reactor.seconds()
    assert await chat(port), "the model answers before the attack"
    attack = Attack(port)
    for _ in range(SLOW):
        attack.connect()
    await proto.wait_for(b"out of file descriptors", 30)
    await proto.wait_for(b"slow client connections", 30)  # the first ones were cut
    for _ in range(300):  # the attack comes back and holds most descriptors again
        if len(attack.open) > LIMIT // 2:
            break
        await deferLater(reactor, 0.1, lambda: None)

    held_while_answered = []  # slow connections open when each chat was answered
    for _ in range(600):  # at most about a minute of tries
        if await chat(port):
            held_while_answered.append(len(attack.open))
            if len(held_while_answered) == WANTED:
                break
        else:
            await deferLater(reactor, 0.05, lambda: None)
    attack.stop()
    assert len(held_while_answered) == WANTED
    # The service ran out of descriptors before the first chat (the line waited for
    # above) and the attack was still holding connections at each answer. How many swings
    # with the machine's load (10 to 63 of 128 seen in CI), so no share is asked for.
    assert min(held_while_answered) > 0, "chats succeed while the attack holds files"
    assert attack.cut, "slow clients are cut with a 408"
    error = json.loads(attack.cut[0].partition(b"\r\n\r\n")[2])["error"]
    assert "clientTimeouts.requestHeader (2s)" in error["message"]
    assert await chat(port)

    proto.transport.signalProcess("TERM")  # type: ignore[union-attr]
    await proto.ended.addTimeout(60, reactor)
    elapsed = reactor.seconds() - started
    out, err = proto.out.decode(errors="replace"), proto.err.decode(errors="replace")
    assert f"open-file limit: {LIMIT} (the hard limit)" in out
    shortage = [line for line in out.splitlines() if "out of file descriptors" in line]
    assert 1 <= len(shortage) <= elapsed / 10 + 2, "a line per 10 s, not per refused connection"
    assert "EMFILE" not in out
    assert "closed" in out and "slow client connections" in out
    for text in (out, err):
        assert "Traceback" not in text and "Unhandled" not in text
    assert "performance sample failed" not in out
    assert "[ERROR]" not in out

