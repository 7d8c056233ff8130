"""Send a connection's buffered bytes now, not on the reactor's next turn.

A Twisted TCP transport only buffers on ``write()``; the bytes leave on the next reactor
iteration, when epoll reports the socket writable. On the proxy's hot path that costs one
extra loop turn (two ``epoll_ctl`` calls, one ``epoll_wait``) per hop, and everything else
done in the current callback (finishing the request, the access log) runs before the
bytes leave. ``flush_now`` sends at once what was written during the current callback, so
the request reaches the upstream and the answer reaches the client as soon as they are
complete. The bytes still go through the transport's own ``doWrite`` (the method the
reactor would call), so partial sends, backpressure and producers behave as usual.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.tcp import Connection


def set_no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on a TCP transport (as twisted.web's server and Go do).

    With it on, a small write (an SSE chunk, a websocket frame) waits for the ACK of the
    previous one, which the peer may delay by up to 40 ms.
    """
    if ITCPTransport.providedBy(transport):
        transport.setTcpNoDelay(True)


def flush_now(transport: Any) -> None:
    """Write ``transport``'s newly buffered bytes now when it is a plain TCP connection."""
    if (
        isinstance(transport, Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and getattr(transport, "_tempDataLen", 0)
    ):
        transport.doWrite()
