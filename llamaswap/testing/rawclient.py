"""A raw TCP test client: sends fixed bytes, collects the answer, waits for markers."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol


class RawClient(Protocol):
    """Sends ``request`` on connect; ``wait_for`` fires on a marker, ``lost`` on close."""

    def __init__(self, request: bytes) -> None:
        """``request``: the bytes to send as soon as the connection is made."""
        self.request = request
        self.received = b""
        self.waiting: tuple[bytes, Deferred[None]] | None = None
        self.lost: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        """Send the request."""
        self.transport.write(self.request)  # type: ignore[union-attr]

    def wait_for(self, marker: bytes) -> Deferred[None]:
        """Fires once ``marker`` has been received (fails if the connection closes first)."""
        d: Deferred[None] = Deferred()
        if marker in self.received:
            d.callback(None)
        else:
            self.waiting = (marker, d)
        return d

    def dataReceived(self, data: bytes) -> None:
        """Collect; fire the waiter whose marker arrived."""
        self.received += data
        if self.waiting is not None and self.waiting[0] in self.received:
            _, d = self.waiting
            self.waiting = None
            d.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        """Fail a pending waiter, then fire ``lost`` with everything received."""
        if self.waiting is not None:
            marker, d = self.waiting
            self.waiting = None
            d.errback(AssertionError(f"closed before {marker!r}; got {self.received[:300]!r}"))
        self.lost.callback(self.received)
