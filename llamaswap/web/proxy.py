"""The streaming reverse proxy: one upstream exchange per client request, with backpressure.

``forward`` sends the (already parsed) request to an upstream through an ``IAgent`` and
streams the answer back. One object, ``_StreamBridge``, is both the upstream body
``Protocol`` and the client request's ``IPushProducer``: a slow client pauses the upstream
socket, a client that leaves aborts it, and an upstream that dies mid-body drops the
client connection instead of finishing a truncated answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from llamaswap.errors import LlamaSwapError, UpstreamError, UpstreamTimeout
from llamaswap.observe.hooks import RequestObserver, RequestRecord, notify, notify_chunk

log = Logger()


def relay_chunk(
    request: Request,
    rec: RequestRecord | None,
    observers: Sequence[RequestObserver],
    clock: IReactorTime,
    data: bytes,
) -> None:
    """Write one upstream body chunk to the client, noting first byte and size in ``rec``."""
    request.write(data)
    if rec is not None:
        note_chunk(rec, observers, clock, data)


def note_chunk(
    rec: RequestRecord, observers: Sequence[RequestObserver], clock: IReactorTime, data: bytes
) -> None:
    """Record one chunk written to the client (first byte, size) and show it to observers."""
    if rec.first_byte_at is None:
        rec.first_byte_at = clock.seconds()
    rec.bytes_out += len(data)
    if observers:
        notify_chunk(observers, rec, data)


# Headers that describe one connection, not the message (RFC 9110 7.6.1): dropped from
# responses too, as Go's ReverseProxy does.
RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers that must not travel to the upstream, plus the framing headers the
# clients compute themselves from the body.
HOP_BY_HOP = RESPONSE_HOP_BY_HOP | {
    b"trailers",
    b"content-length",
    # twisted.web already answered 100-continue and holds the whole body.
    b"expect",
}
# Request headers outgoing_pairs may rewrite rather than copy.
_SPECIAL_REQUEST = frozenset({b"x-forwarded-for", b"accept-encoding"})
_FORWARDED = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"}
)

# Outcomes passed to ``on_end`` (and kept on the record's ``error``).
OK = None
CLIENT_GONE = "client disconnected"
UPSTREAM_LOST = "upstream connection lost mid-response"


@implementer(IBodyProducer)
class BytesProducer:
    """An exact-length body producer for bytes already in memory (no cooperator)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the whole body at once."""
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: everything is written in startProducing."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


def outgoing_pairs(
    request: Request,
    *,
    forwarded_for: bool = True,
    keep_forwarded: bool = True,
    overrides: Iterable[tuple[bytes, bytes]] = (),
    drop: Sequence[bytes] = (),
    reduce_encoding: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The client's request headers minus hop-by-hop ones, as (name, value) lines.

    ``Host`` is kept as the client sent it (SPEC 3.5) unless ``drop`` names it; the
    client address is appended to ``X-Forwarded-For`` when ``forwarded_for``; an
    ``overrides`` name replaces every header of that name.
    """
    dropped = HOP_BY_HOP.union(h.lower() for h in drop) if drop else HOP_BY_HOP
    if not keep_forwarded:
        dropped = dropped | _FORWARDED
    overrides = list(overrides)
    if overrides:
        dropped = dropped | {name.lower() for name, _ in overrides}
    headers = request.requestHeaders
    conn = headers.getRawHeaders(b"connection")
    if conn:
        dropped = dropped | {t.strip().lower() for v in conn for t in v.split(b",") if t.strip()}
    out: list[tuple[bytes, bytes]] = []
    prior_for: list[bytes] = []
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower not in _SPECIAL_REQUEST and lower not in dropped:
            if len(values) == 1:
                out.append((name, values[0]))
            else:
                out.extend((name, value) for value in values)
            continue
        if lower in dropped:
            continue
        if lower == b"x-forwarded-for" and forwarded_for:
            prior_for.extend(values)
            continue
        if lower == b"accept-encoding" and reduce_encoding:
            # Observers parse usage from the body: only encodings they can decode.
            kept = [
                t.strip() for v in values for t in v.split(b",")
                if t.strip().split(b";")[0].strip().lower() in (b"gzip", b"deflate")
            ]
            out.append((name, b", ".join(kept)))
            continue
        out.extend((name, value) for value in values)
    out.extend(overrides)
    if forwarded_for:
        host = getattr(request.getClientAddress(), "host", None)
        if host:
            out.append((b"X-Forwarded-For", b", ".join([*prior_for, host.encode()])))
        elif prior_for:
            out.append((b"X-Forwarded-For", b", ".join(prior_for)))
    return out


def outgoing_headers(request: Request, **options: Any) -> Headers:
    """``outgoing_pairs`` as a ``Headers`` (for ``Agent``)."""
    return headers_of(outgoing_pairs(request, **options))


def headers_of(pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
    """A ``Headers`` holding ``pairs``."""
    out = Headers()
    for name, value in pairs:
        out.addRawHeader(name, value)
    return out


def copy_response_head(request: Request, response: IResponse) -> None:
    """Copy status, headers (multi-valued) and known length from upstream to client."""
    request.setResponseCode(response.code, response.phrase)
    headers = request.responseHeaders
    sse = False
    upstream = response.headers
    named = {
        t.strip().lower()
        for v in upstream.getRawHeaders(b"connection") or () for t in v.split(b",")
    }
    for name, values in upstream.getAllRawHeaders():
        lower = name.lower()
        if lower in RESPONSE_HOP_BY_HOP or lower in named:
            continue
        headers.setRawHeaders(name, list(values))
        if name.lower() == b"content-type" and any(b"text/event-stream" in v for v in values):
            sse = True
    if sse:
        headers.setRawHeaders(b"x-accel-buffering", [b"no"])
    if response.length is not UNKNOWN_LENGTH and request.method != b"HEAD":
        headers.setRawHeaders(b"content-length", [b"%d" % response.length])


def nothing() -> None:
    """A hook that does nothing (stands in for one already run or removed)."""


class ClientTracker:
    """Knows whether the client is still there; runs cancel hooks the moment it leaves."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.gone = False
        self.finished = False
        self._on_gone: list[Callable[[], None]] = []
        request.notifyFinish().addCallbacks(self._done, self._lost)

    def on_gone(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` when the client disconnects; returns a remover."""
        if self.gone:
            hook()
            return lambda: None
        self._on_gone.append(hook)

        def remove() -> None:
            if hook in self._on_gone:
                self._on_gone.remove(hook)

        return remove

    def _done(self, _: object) -> None:
        self.finished = True
        self._on_gone.clear()

    def _lost(self, _: Failure) -> None:
        self.gone = True
        hooks, self._on_gone = self._on_gone, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.failure("disconnect hook failed")

    @property
    def open(self) -> bool:
        """True while the request can still be answered."""
        return not (self.gone or self.finished)


@implementer(IPushProducer)
class _StreamBridge(Protocol):
    """Upstream body protocol and client push producer in one: chunks flow, pauses propagate."""

    def __init__(
        self,
        tracker: ClientTracker,
        rec: RequestRecord | None,
        observers: Sequence[RequestObserver],
        reactor: IReactorTime,
        ended: Deferred[str | None],
    ) -> None:
        self._tracker = tracker
        self._request = tracker.request
        self._rec = rec
        self._observers = observers
        self._reactor = reactor
        self._ended = ended
        self._registered = False
        self._unhook: Callable[[], None] = nothing

    def connectionMade(self) -> None:
        """Register as the client request's producer and watch for a disconnect."""
        if not self._tracker.open:
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._request.registerProducer(self, True)
        self._registered = True
        self._unhook = self._tracker.on_gone(self._client_gone)

    def dataReceived(self, data: bytes) -> None:
        """Write the chunk straight to the client."""
        relay_chunk(self._request, self._rec, self._observers, self._reactor, data)

    def pauseProducing(self) -> None:
        """The client is slow: stop reading the upstream socket."""
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        """The client caught up: read the upstream again."""
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        """The client connection is going away: abort the upstream exchange."""
        self._client_gone()

    def _client_gone(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        self._end(CLIENT_GONE)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        """End the client response the way the upstream one ended."""
        unhook, self._unhook = self._unhook, nothing  # the hook holds self: break the cycle
        unhook()
        if not self._tracker.open:
            self._end(CLIENT_GONE)
            return
        if self._registered:
            self._request.unregisterProducer()
            self._registered = False
        if reason.check(ResponseDone, PotentialDataLoss):
            self._request.finish()
            self._end(OK)
        else:
            log.info(
                "upstream connection lost mid-response for {uri}: {reason}",
                uri=self._request.uri,
                reason=reason.getErrorMessage(),
            )
            self._request.loseConnection()
            self._end(UPSTREAM_LOST)

    def _end(self, outcome: str | None) -> None:
        if not self._ended.called:
            self._ended.callback(outcome)


def describe_connect_error(failure: Failure) -> str:
    """A short human message for why the upstream could not be reached."""
    if failure.check(ResponseFailed):
        inner = failure.value.reasons[0] if failure.value.reasons else failure
        return str(inner.getErrorMessage() if isinstance(inner, Failure) else inner)
    return failure.getErrorMessage()


def forward(
    *,
    agent: IAgent,
    reactor: IReactorTime,
    tracker: ClientTracker,
    method: bytes,
    url: bytes,
    headers: Headers,
    body: bytes,
    target_name: str,
    response_header_timeout: float = 0,
    rec: RequestRecord | None = None,
    observers: Sequence[RequestObserver] = (),
    on_response: Callable[[IResponse], bool] | None = None,
) -> Deferred[str | None]:
    """Send one request upstream and stream the answer to ``tracker.request``.

    Fires with ``None`` when the response was delivered completely, or with a string
    saying how it ended otherwise (client gone, upstream lost). Fails with a
    ``LlamaSwapError`` (502/504) when no response head arrived; the caller renders it.
    ``on_response`` may take over writing the head (return False to skip the copy).
    """
    request = tracker.request
    ended: Deferred[str | None] = Deferred()
    producer = None
    if body or method not in (b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"):
        producer = BytesProducer(body)
    d = agent.request(method, url, headers, producer)
    timed_out = []
    timer = None
    if response_header_timeout > 0:

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = reactor.callLater(response_header_timeout, expire)
    remove_hook = tracker.on_gone(d.cancel)

    def unhook() -> None:
        remove_hook()
        if timer is not None and timer.active():
            timer.cancel()

    def got_response(response: IResponse) -> Deferred[str | None]:
        unhook()
        if not tracker.open:
            # Drop the connection to the upstream: nobody is listening.
            response.deliverBody(_Discard())
            ended.callback(CLIENT_GONE)
            return ended
        if on_response is None or on_response(response):
            copy_response_head(request, response)
        if rec is not None:
            rec.status = response.code
            rec.resp_headers = {
                k.decode("latin-1"): b", ".join(v).decode("latin-1")
                for k, v in response.headers.getAllRawHeaders()
            }
            ctype = response.headers.getRawHeaders(b"content-type")
            rec.resp_content_type = ctype[0].decode("latin-1") if ctype else ""
            if observers:
                notify(observers, "response_started", rec)
        response.deliverBody(_StreamBridge(tracker, rec, observers, reactor, ended))
        return ended

    def failed(failure: Failure) -> Any:
        unhook()
        if not tracker.open:
            return CLIENT_GONE
        if timed_out:
            raise UpstreamTimeout(
                f"{target_name} sent no response headers within "
                f"{response_header_timeout:g}s"
            )
        if failure.check(LlamaSwapError):
            return failure
        if failure.check(ConnectError, ConnectionRefusedError, DNSLookupError):
            reason = failure.getErrorMessage()
        else:
            reason = describe_connect_error(failure)
        raise UpstreamError(f"{target_name} is unreachable: {reason}")

    return cast("Deferred[str | None]", d.addCallbacks(got_response, failed))


class _Discard(Protocol):
    """Drops an unwanted response body by closing its connection."""

    def connectionMade(self) -> None:
        """Abort at once: the answer is not wanted."""
        self.transport.stopProducing()  # type: ignore[union-attr]
