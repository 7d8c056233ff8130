"""``forward`` over the lean client (plain-http upstreams): same contract, less CPU.

One ``_FastExchange`` is the response ``Handler`` of the upstream connection and the
client request's ``IPushProducer``: chunks are written as they arrive, a slow client
pauses the upstream socket, a client that leaves aborts it, an upstream that breaks
mid-body drops the client connection. Fires like ``proxy.forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from llamaswap.errors import UpstreamError, UpstreamTimeout
from llamaswap.observe.hooks import RequestObserver, RequestRecord, notify
from llamaswap.web.fastclient import FastPool, ResponseHead, UpstreamConnection, request_bytes
from llamaswap.web.flush import flush_now
from llamaswap.web.proxy import (
    CLIENT_GONE,
    OK,
    UPSTREAM_LOST,
    ClientTracker,
    note_chunk,
    nothing,
)

log = Logger()

_BODYLESS_METHODS = (b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE")


@implementer(IPushProducer)
class _FastExchange:
    """One request/response over a pooled upstream connection."""

    def __init__(
        self,
        *,
        pool: FastPool,
        reactor: Any,
        tracker: ClientTracker,
        method: bytes,
        data: bytes,
        target_name: str,
        timeout: float,
        rec: RequestRecord | None,
        observers: Sequence[RequestObserver],
        on_response: Callable[[Any], bool] | None,
    ) -> None:
        self.pool = pool
        self.reactor = reactor
        self.tracker = tracker
        self.request = tracker.request
        # Kept: finishing the request drops request.channel while its bytes still wait.
        self.client_transport = getattr(self.request.channel, "transport", None)
        self.method = method
        self.data = data
        self.target_name = target_name
        self.timeout = timeout
        self.rec = rec
        self.observers = observers
        self.on_response = on_response
        self.result: Deferred[str | None] = Deferred()
        self.conn: UpstreamConnection | None = None
        self.connecting: Deferred[UpstreamConnection] | None = None
        self.timer: IDelayedCall | None = None
        self.headed = False
        self.registered = False
        self.retried = False
        self.reused = False
        self.unnoted_head: ResponseHead | None = None
        self.unnoted: list[bytes] = []
        self.unhook: Callable[[], None] = nothing

    def start(self) -> Deferred[str | None]:
        """Acquire a connection and send the request."""
        self.unhook = self.tracker.on_gone(self._client_gone)
        if self.timeout > 0:
            self.timer = self.reactor.callLater(self.timeout, self._timed_out)
        self._connect()
        return self.result

    def _connect(self) -> None:
        idle = self.pool.take_idle()
        self.reused = idle is not None
        if idle is not None:
            self._connected(idle)
            return
        d = self.pool.acquire()
        self.connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, conn: UpstreamConnection) -> None:
        self.connecting = None
        if self.result.called:
            conn.abort()
            return
        self.conn = conn
        conn.send(self.data, self, head_only=self.method == b"HEAD")

    def _connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        if not self.result.called:
            self._fail(UpstreamError(f"{self.target_name} is unreachable: "
                                     f"{failure.getErrorMessage()}"))

    # -- Handler ---------------------------------------------------------------------------

    def on_head(self, head: ResponseHead) -> None:
        """Copy status and headers to the client, then stream."""
        self._stop_timer()
        if not self.tracker.open:
            self._abort_upstream()
            self._finish(CLIENT_GONE)
            return
        self.headed = True
        request = self.request
        if self.on_response is None or self.on_response(head):
            request.setResponseCode(head.code, head.phrase)
            out = request.responseHeaders
            seen: set[bytes] = set()
            sse = False
            for name, value in head.headers:
                lower = name.lower()
                if lower in seen:
                    out.addRawHeader(name, value)
                else:
                    seen.add(lower)
                    out.setRawHeaders(name, [value])
                if lower == b"content-type" and b"text/event-stream" in value:
                    sse = True
            if sse:
                out.setRawHeaders(b"x-accel-buffering", [b"no"])
            if head.length is not None and self.method != b"HEAD":
                out.setRawHeaders(b"content-length", [b"%d" % head.length])
        if self.rec is not None:
            self.rec.status = head.code
            # The rest of the record waits until the first bytes are on their way.
            self.unnoted_head = head
        request.registerProducer(self, True)
        self.registered = True

    def _note_head(self, head: ResponseHead) -> None:
        """Fill the record's response fields and tell the observers the answer started."""
        self.unnoted_head = None
        rec = self.rec
        assert rec is not None
        merged: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            merged[key] = f"{merged[key]}, {text}" if key in merged else text
        rec.resp_headers = merged
        rec.resp_content_type = merged.get("Content-Type") or next(
            (v for k, v in merged.items() if k.lower() == "content-type"), ""
        )
        if self.observers:
            notify(self.observers, "response_started", rec)

    def on_data(self, data: bytes) -> None:
        """Write the chunk to the client; the record and observers see it once it is sent."""
        self.request.write(data)
        if self.rec is not None:
            self.unnoted.append(data)

    def _note_pending(self) -> None:
        """Show observers the head and chunks written since the last send."""
        if self.unnoted_head is not None:
            self._note_head(self.unnoted_head)
        if self.unnoted:
            chunks, self.unnoted = self.unnoted, []
            rec = self.rec
            assert rec is not None
            for data in chunks:
                note_chunk(rec, self.observers, self.reactor, data)

    def on_end(self, error: str | None) -> None:
        """Finish the client response, or drop it if the upstream broke."""
        if self.result.called:
            return
        conn, self.conn = self.conn, None
        if not self.headed:
            if (
                error is not None and self.reused and not self.retried
                and conn is not None and not conn.got_bytes
            ):
                # A pooled connection the server had just closed: try a fresh one once.
                self.retried = True
                self._connect()
                return
            self._stop_timer()
            self._fail(UpstreamError(f"{self.target_name} is unreachable: {error}"))
            return
        self._note_pending()
        if not self.tracker.open:
            self._finish(CLIENT_GONE)
            return
        if self.registered:
            self.request.unregisterProducer()
            self.registered = False
        if error is None:
            self.request.finish()
            self._finish(OK)
        else:
            log.info("upstream connection lost mid-response for {uri}: {error}",
                     uri=self.request.uri, error=error)
            self.request.loseConnection()
            self._finish(UPSTREAM_LOST)

    def flush(self) -> None:
        """Send what this exchange wrote to the client now, then do the bookkeeping.

        Observers (token counting, captures, metrics) see the bytes after they left, so
        their work is not part of the answer's latency.
        """
        flush_now(self.client_transport)
        self._note_pending()

    # -- IPushProducer ---------------------------------------------------------------------

    def pauseProducing(self) -> None:
        """The client is slow: stop reading the upstream."""
        if self.conn is not None:
            self.conn.pause()

    def resumeProducing(self) -> None:
        """The client caught up."""
        if self.conn is not None:
            self.conn.resume()

    def stopProducing(self) -> None:
        """The client connection is going away."""
        self._client_gone()

    # -- endings ---------------------------------------------------------------------------

    def _client_gone(self) -> None:
        self._stop_timer()
        self._abort_upstream()
        self._finish(CLIENT_GONE)

    def _timed_out(self) -> None:
        self.timer = None
        if self.headed or self.result.called:
            return
        self._abort_upstream()
        self._fail(UpstreamTimeout(f"{self.target_name} sent no response headers within "
                                   f"{self.timeout:g}s"))

    def _abort_upstream(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            connecting.addErrback(lambda _: None)
            connecting.cancel()

    def _unhook(self) -> None:
        """Stop watching the client; dropping the hook breaks the tracker-exchange cycle."""
        unhook, self.unhook = self.unhook, nothing
        unhook()

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _finish(self, outcome: str | None) -> None:
        self._unhook()
        if not self.result.called:
            self.result.callback(outcome)

    def _fail(self, error: Exception) -> None:
        self._unhook()
        if not self.result.called:
            if not self.tracker.open:
                self.result.callback(CLIENT_GONE)
            else:
                self.result.errback(error)


def forward_fast(
    *,
    pool: FastPool,
    reactor: Any,
    tracker: ClientTracker,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    target_name: str,
    response_header_timeout: float = 0,
    rec: RequestRecord | None = None,
    observers: Sequence[RequestObserver] = (),
    on_response: Callable[[Any], bool] | None = None,
) -> Deferred[str | None]:
    """``proxy.forward`` for a plain-http upstream, ``target`` being path + query.

    ``headers`` are the request's header lines (``proxy.outgoing_pairs``).
    """
    pairs = list(headers)
    if not any(name.lower() == b"host" for name, _ in pairs):
        netloc = pool.host if pool.port == 80 else f"{pool.host}:{pool.port}"
        pairs.append((b"Host", netloc.encode()))
    if pool.target_prefix:  # via an HTTP proxy (SPEC 3.5)
        target = pool.target_prefix + target
        pairs.extend(pool.proxy_headers)
    send_length = bool(body) or method not in _BODYLESS_METHODS
    data = request_bytes(method, target, pairs, body, send_length)
    return _FastExchange(
        pool=pool,
        reactor=reactor,
        tracker=tracker,
        method=method,
        data=data,
        target_name=target_name,
        timeout=response_header_timeout,
        rec=rec,
        observers=observers,
        on_response=on_response,
    ).start()
