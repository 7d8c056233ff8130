"""Send a connection's buffered bytes now, not on the reactor's next turn.

A Twisted TCP transport only buffers on ``write()``; the bytes leave on the next reactor
iteration, when epoll reports the socket writable. On the proxy's hot path that costs one
extra loop turn (two ``epoll_ctl`` calls, one ``epoll_wait``) per hop, and everything else
done in the current callback (finishing the request, the access log) runs before the
bytes leave. ``flush_now`` sends at once what was written during the current callback, so
the request reaches the upstream and the answer reaches the client as soon as they are
complete. The bytes still go through the transport's own ``doWrite`` (the method the
reactor would call), so partial sends, backpressure and producers behave as usual.
``send_now`` goes one step further for a whole message written at once (a request to the
upstream): on an idle connection it skips the transport and its two ``epoll_ctl`` calls.
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
    if _open_plain_tcp(transport) and transport._tempDataLen:
        transport.doWrite()


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` and send it at once; straight to the socket when nothing else waits.

    A transport's ``write`` registers the socket with epoll for writing and the send then
    unregisters it: two ``epoll_ctl`` calls around every send. When the transport is an
    idle plain TCP connection (nothing buffered, not closing) the bytes go to the socket
    directly instead, and only what the socket does not take goes through ``write`` (and
    ``flush_now``), after nothing, so the order of bytes is kept. A send that fails (the
    peer went away) is left for the transport to find out about, as it would have.
    """
    if (
        _open_plain_tcp(transport)
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # full (EAGAIN), or broken: the transport's own write decides
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
    flush_now(transport)


def _open_plain_tcp(transport: Any) -> bool:
    """A TCP connection without TLS that is connected and not closing."""
    return (
        isinstance(transport, Connection)
        and not transport.TLS
        and bool(transport.connected)
        and not transport.disconnecting
    )
