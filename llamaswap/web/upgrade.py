"""Connection upgrades (WebSocket): the request head goes upstream, then bytes flow both ways.

After the head is sent, the client connection is taken over from twisted.web and spliced
to the upstream socket: the upstream's ``101 Switching Protocols`` (or its refusal) and
everything after it are relayed verbatim, each side being the other's push producer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.server import Request

from llamaswap.errors import UpstreamError
from llamaswap.proxyroute import RouteCache
from llamaswap.web.flush import set_no_delay
from llamaswap.web.proxy import CLIENT_GONE


def is_upgrade(request: Request) -> bool:
    """True for a WebSocket upgrade request (SPEC 4.10)."""
    upgrade = b",".join(request.requestHeaders.getRawHeaders(b"upgrade") or []).lower()
    if b"websocket" not in upgrade:
        return False
    conn = b",".join(request.requestHeaders.getRawHeaders(b"connection") or []).lower()
    return any(t.strip() == b"upgrade" for t in conn.split(b","))


def request_head(
    request: Request, path: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The raw HTTP/1.1 request head (and body) to send upstream."""
    lines = [b"%s %s HTTP/1.1" % (request.method, path)]
    for name, value in headers:
        lines.append(name + b": " + value)
    for name in (b"upgrade", b"connection"):
        for value in request.requestHeaders.getRawHeaders(name) or []:
            lines.append(name + b": " + value)
    if body:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Side(Protocol):
    """One end of the splice: relays what it receives to its peer's transport."""

    peer: _Side | None = None

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        """Frames are small and interactive: no Nagle delay."""
        set_no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Relay to the other side (or hold it until the other side exists)."""
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Close the other side too."""
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
        self._on_lost()


def proxied_head(
    head: bytes, target_prefix: bytes, proxy_headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """``head`` for an HTTP proxy: absolute-form request target plus the proxy's headers."""
    line_end = head.index(b"\r\n")
    method, _, rest = head[:line_end].partition(b" ")
    extra = b"".join(b"\r\n" + name + b": " + value for name, value in proxy_headers)
    return method + b" " + target_prefix + rest + extra + head[line_end:]


def splice(
    *,
    reactor: Any,
    request: Request,
    base_url: str,
    head: bytes,
    connect_timeout: float,
    target_name: str,
    routes: RouteCache | None = None,
) -> Deferred[str | None]:
    """Connect upstream, send ``head``, then join the two connections until one closes.

    ``routes`` says how to reach the upstream (direct, TLS, via an HTTP proxy or a CONNECT
    tunnel); without it the connection is direct. Fires with None when both ends are
    closed, or with CLIENT_GONE at once when the client left before the upstream connection
    was made; fails with UpstreamError (before anything was sent to the client) when the
    upstream cannot be reached.
    """
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if routes is None:
        routes = RouteCache(reactor, connect_timeout=connect_timeout)
    route = routes.route(parts.scheme, parts.hostname or "127.0.0.1", port)
    endpoint = route.endpoint
    if route.target_prefix:
        head = proxied_head(head, route.target_prefix, route.proxy_headers)
    ended: Deferred[str | None] = Deferred()
    lost = [0]

    def one_lost() -> None:
        lost[0] += 1
        if lost[0] == 2 and not ended.called:
            ended.callback(None)

    upstream_side = _Side(one_lost)
    client_side = _Side(one_lost)
    upstream_side.peer, client_side.peer = client_side, upstream_side

    def connected(proto: _Side) -> Deferred[str | None]:
        channel = request.channel
        if channel is None or channel.transport is None:
            # the client left while we connected: nothing to join, end now
            proto.transport.loseConnection()  # type: ignore[union-attr]
            return succeed(CLIENT_GONE)
        up: Any = proto.transport
        up.write(head)
        client: Any = channel.transport
        buffered = b"".join(getattr(channel, "_dataBuffer", []) or [])
        channel.setTimeout(None)
        client.unregisterProducer()
        channel._protocolUpgradeForWebsockets(client_side)
        if buffered:
            up.write(buffered)
        for data in upstream_side.pending:
            client.write(data)
        upstream_side.pending.clear()
        # Each side pauses the other when its write buffer fills.
        client.registerProducer(up, True)
        up.registerProducer(client, True)
        client.resumeProducing()
        return ended

    def failed(failure: Failure) -> None:
        raise UpstreamError(f"{target_name} is unreachable: {failure.getErrorMessage()}")

    factory = Factory.forProtocol(lambda: upstream_side)
    factory.noisy = False
    d = endpoint.connect(factory)
    return d.addCallbacks(connected, failed)
