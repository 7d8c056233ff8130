"""A small HTTP forward proxy for tests: absolute-form requests and CONNECT tunnels.

It records every request head it receives (method, request target, headers, which client
connection carried it), can require Basic credentials, can refuse CONNECT, and maps
host names to real addresses (``hosts``) so tests can use names only the proxy resolves.
Requests are rewritten to origin form and sent on one upstream connection per client
connection; responses are relayed byte for byte (so keep-alive, streaming, backpressure
and disconnects pass through unchanged). Request bodies must carry Content-Length.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

MAX_HEAD = 64 * 1024
_DROPPED = frozenset({"proxy-authorization", "proxy-connection"})


@attrs.define
class Seen:
    """One request head as the proxy received it."""

    method: str
    target: str
    headers: dict[str, str]
    connection: int


class _Upstream(Protocol):
    """The proxy's connection to the target: relays everything to the client."""

    def __init__(self, client: _ProxyConnection) -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        """Relay to the client as is."""
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The target hung up: so does the proxy, towards the client."""
        self.client.upstream_lost(self)


class _ProxyConnection(Protocol):
    """One client connection to the proxy."""

    def __init__(self, proxy: ForwardProxy, number: int) -> None:
        self.proxy = proxy
        self.number = number
        self.buf = b""
        self.body_left = 0
        self.tunnel = False
        self.upstream: _Upstream | None = None
        self.upstream_key: tuple[str, int] | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.gone: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        """Count the connection."""
        self.proxy.live.add(self)

    def dataReceived(self, data: bytes) -> None:
        """Parse request heads; pass bodies and tunnelled bytes through."""
        if self.tunnel:
            self._send(data)
            return
        self.buf += data
        while self.buf and not self.tunnel and not self.closed:
            if self.body_left:
                piece, self.buf = self.buf[: self.body_left], self.buf[self.body_left :]
                self.body_left -= len(piece)
                self._send(piece)
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._reply(431, "Request Header Fields Too Large")
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self._request(head)
        if self.tunnel and self.buf:
            rest, self.buf = self.buf, b""
            self._send(rest)

    def _request(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = [*lines[0].split(" ", 2), "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.proxy.seen.append(Seen(method, target, headers, self.number))
        if not self.proxy.authorized(headers.get("proxy-authorization")):
            self._reply(407, "Proxy Authentication Required",
                        b'Proxy-Authenticate: Basic realm="test"\r\n')
            return
        if method == "CONNECT":
            self._connect(target)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._reply(400, "Bad Request")
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reply(501, "Not Implemented")
            return
        origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        out = [f"{method} {origin} HTTP/1.1"]
        for line in lines[1:]:
            if line.partition(":")[0].strip().lower() not in _DROPPED:
                out.append(line)
        self._use_upstream(parts.hostname, parts.port or 80)
        self._send(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        self.body_left = int(headers.get("content-length", "0") or 0)
        if "upgrade" in headers:
            self.tunnel = True  # after a 101 the bytes are no longer HTTP

    def _connect(self, authority: str) -> None:
        if self.proxy.refuse_connect is not None:
            self._reply(self.proxy.refuse_connect, "Refused by test proxy")
            return
        host, _, port = authority.rpartition(":")
        self.tunnel = True
        self._use_upstream(host.strip("[]"), int(port), on_connected=self._tunnel_open)

    def _tunnel_open(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    def _use_upstream(self, host: str, port: int, on_connected: Any = None) -> None:
        key = (host, port)
        if self.upstream_key == key:
            return
        if self.upstream is not None and self.upstream.transport is not None:
            old, self.upstream = self.upstream, None
            if self.transport is not None:
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
            old.transport.loseConnection()  # type: ignore[union-attr]
        self.upstream_key = key
        real_host, real_port = self.proxy.hosts.get(host, (host, port))
        upstream = _Upstream(self)
        self.upstream = upstream
        factory = Factory.forProtocol(lambda: upstream)
        factory.noisy = False
        d = TCP4ClientEndpoint(self.proxy.reactor, real_host, real_port, timeout=5).connect(
            factory
        )

        def connected(_: Any) -> None:
            if self.closed:
                upstream.transport.loseConnection()  # type: ignore[union-attr]
                return
            if on_connected is not None:
                on_connected()
            client, up = self.transport, upstream.transport
            assert client is not None and up is not None
            client.registerProducer(up, True)  # type: ignore[attr-defined]
            up.registerProducer(client, True)  # type: ignore[attr-defined]
            pending, self.pending = self.pending, []
            for data in pending:
                if data:
                    up.write(data)

        def failed(failure: Failure) -> None:
            if self.upstream is upstream:
                self.pending = []
                self._reply(502, "Bad Gateway")

        d.addCallbacks(connected, failed)

    def _send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        if upstream.transport is None or self.pending:
            self.pending.append(data)
        else:
            upstream.transport.write(data)

    def _reply(self, code: int, phrase: str, extra: bytes = b"") -> None:
        if self.transport is None:
            return
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (code, phrase.encode(), extra)
        )
        self.closed = True
        self.transport.loseConnection()

    def upstream_lost(self, upstream: _Upstream) -> None:
        """The current target connection closed: close the client side too."""
        if upstream is self.upstream and self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """The client left: drop the target connection (the target sees the client go)."""
        self.closed = True
        self.proxy.live.discard(self)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.loseConnection()
        waiters, self.proxy.closed_waiters = self.proxy.closed_waiters, []
        for d in waiters:
            d.callback(self.number)
        self.gone.callback(self.number)


class ForwardProxy:
    """The proxy's state and settings; ``factory()`` serves it."""

    def __init__(
        self,
        reactor: Any,
        *,
        hosts: Mapping[str, tuple[str, int]] | None = None,
        credentials: tuple[str, str] | None = None,
        refuse_connect: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.hosts = dict(hosts or {})
        self.credentials = credentials
        self.refuse_connect = refuse_connect
        self.seen: list[Seen] = []
        self.connections = 0
        self.live: set[_ProxyConnection] = set()
        self.closed_waiters: list[Deferred[int]] = []

    def authorized(self, header: str | None) -> bool:
        """True when no credentials are required or ``header`` carries the right ones."""
        if self.credentials is None:
            return True
        pair = ":".join(self.credentials).encode()
        return header == "Basic " + base64.b64encode(pair).decode()

    def factory(self) -> Factory:
        """A server factory for this proxy."""
        proxy = self

        class _Factory(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> Protocol:
                proxy.connections += 1
                return _ProxyConnection(proxy, proxy.connections)

        return _Factory()

    def wait_client_closed(self) -> Deferred[int]:
        """Fires with the connection number when the next client connection closes."""
        d: Deferred[int] = Deferred()
        self.closed_waiters.append(d)
        return d

    def close(self) -> Deferred[Any]:
        """Abort every open connection (both sides); fires when they are gone."""
        waits = []
        for conn in list(self.live):
            if conn.transport is not None:
                waits.append(conn.gone)
                conn.transport.abortConnection()  # type: ignore[attr-defined]
        return DeferredList(waits)
