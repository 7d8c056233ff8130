"""A websocket-ish test upstream: 101 to an upgrade, then echoes every frame with a prefix."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol


class EchoServer(Protocol):
    """Answers an upgrade with 101, then echoes with ``echo:``; other requests get 200 ok.

    Every request head is appended to ``heads``; ``closed`` Deferreds fire when the
    connection goes away.
    """

    def __init__(self, heads: list[bytes], closed: list[Deferred[None]] | None = None) -> None:
        """Record heads into ``heads``; fire ``closed`` on disconnect."""
        self.buf = b""
        self.upgraded = False
        self.heads = heads
        self.closed = closed if closed is not None else []

    def dataReceived(self, data: bytes) -> None:
        """Upgrade (or answer 200 and close) on the first head, echo afterwards."""
        if self.upgraded:
            self.transport.write(b"echo:" + data)  # type: ignore[union-attr]
            return
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            self.heads.append(head)
            if b"upgrade: websocket" not in head.lower():
                self.transport.write(  # type: ignore[union-attr]
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                )
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.upgraded = True
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n"
            )
            if rest:
                self.dataReceived(rest)

    def connectionLost(self, reason: Any = None) -> None:
        """Fire every ``closed`` Deferred."""
        for d in self.closed:
            d.callback(None)
