"""A bare Twisted TCP relay: the floor of one Python/Twisted proxy hop, for comparison.

Not llamaswap and not an HTTP proxy: each client connection gets its own upstream
connection and the bytes are copied both ways (``twisted.protocols.portforward``), with
Nagle's algorithm off and each read's bytes sent at once (``llamaswap.web.flush``), as
llamaswap sends them. No parsing, no routing, no objects per request: what is left is
the reactor, the kernel and the machine's wake-ups. ``proxy_bench.py`` measures it
beside llamaswap, so the distance between the two is the cost of llamaswap's own Python.

Usage (prints the port it listens on, then serves until killed):

    python benchmarks/relay_proxy.py http://127.0.0.1:8081
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor
from twisted.protocols import portforward

from llamaswap.web.flush import flush_now, set_no_delay


def _relay(protocol: Any, data: bytes) -> None:
    """Write ``data`` to the other side and send it now."""
    peer = protocol.peer.transport
    peer.write(data)
    flush_now(peer)


class RelayClient(portforward.ProxyClient):
    """The upstream side."""

    def connectionMade(self) -> None:
        """Nagle off, then wire both sides together (flow control included)."""
        set_no_delay(self.transport)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Upstream bytes to the client."""
        _relay(self, data)


class RelayClientFactory(portforward.ProxyClientFactory):
    """Builds the upstream side."""

    protocol = RelayClient


class RelayServer(portforward.ProxyServer):
    """The client side."""

    clientProtocolFactory = RelayClientFactory

    def connectionMade(self) -> None:
        """Nagle off; connect to the upstream (reading waits until it is connected)."""
        set_no_delay(self.transport)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Client bytes to the upstream."""
        _relay(self, data)


def main(upstream: str) -> None:
    """Relay a port on 127.0.0.1 to ``upstream`` (an ``http://host:port`` URL)."""
    parts = urlsplit(upstream)
    factory = portforward.ProxyFactory(parts.hostname or "127.0.0.1", parts.port or 80)
    factory.protocol = RelayServer
    factory.noisy = False
    port = reactor.listenTCP(0, factory, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1])
