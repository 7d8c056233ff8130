"""Real-socket HTTP helpers: serve a resource on 127.0.0.1 and read streamed bodies."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, Response
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site


class Served:
    """A Site listening on an ephemeral port; ``stop()`` closes it."""

    def __init__(self, children: dict[bytes, Resource]) -> None:
        """Mount ``children`` under a plain root and listen."""
        root = Resource()
        for name, child in children.items():
            root.putChild(name, child)
        self.site = Site(root)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.agent = Agent(reactor)

    def url(self, path: str) -> bytes:
        """Absolute URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port.getHost().port}{path}".encode()

    def get(self, path: str, headers: dict[str, str] | None = None, method: bytes = b"GET") -> Any:
        """Request ``path``; fires with the Response (body not read)."""
        hdrs = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        return self.agent.request(method, self.url(path), hdrs)

    def stop(self) -> Any:
        """Stop listening."""
        return self.port.stopListening()


class BodyReader(Protocol):
    """Collects a streamed body; can pause the socket and wait for text."""

    def __init__(self) -> None:
        """Empty body, nothing awaited."""
        self.data = b""
        self.done: Deferred[bytes] = Deferred()
        self._waits: list[tuple[bytes, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        """Accumulate and fire any wait that is now satisfied."""
        self.data += data
        for item in list(self._waits):
            if item[0] in self.data:
                self._waits.remove(item)
                item[1].callback(self.data)

    def connectionLost(self, reason: Failure = Failure(Exception("lost"))) -> None:
        """The body ended (or the connection was dropped)."""
        if not self.done.called:
            self.done.callback(self.data)

    def wait_for(self, text: bytes) -> Deferred[bytes]:
        """Fires once ``text`` has been received."""
        d: Deferred[bytes] = Deferred()
        if text in self.data:
            d.callback(self.data)
        else:
            self._waits.append((text, d))
        d.addTimeout(10, reactor)  # type: ignore[arg-type]
        return d

    def pause(self) -> None:
        """Stop reading from the socket."""
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        """Read again."""
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """Drop the connection."""
        assert self.transport is not None
        self.transport.stopProducing()  # type: ignore[attr-defined]


def read_body(response: Response) -> BodyReader:
    """Start delivering ``response``'s body into a new BodyReader."""
    reader = BodyReader()
    response.deliverBody(reader)
    return reader
