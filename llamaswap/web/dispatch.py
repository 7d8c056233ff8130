"""One admitted model request (``ModelCall``): rewrite the body, get a grant, stream the answer.

One ``ModelCall`` per request. It ends exactly once (``_end``), whatever happens: served,
refused, upstream error, client gone. The Router grant is released there and only there;
the Router Deferred is cancelled if the client leaves while waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from llamaswap.config.model import Timeouts
from llamaswap.errors import (
    Conflict,
    LlamaSwapError,
    ProcessNotReady,
)
from llamaswap.observe.hooks import RequestRecord, next_request_id, notify
from llamaswap.process.state import ProcessState
from llamaswap.web.clientip import request_client_ip
from llamaswap.web.context import (
    InternalError,
    SiteContext,
    join_url,
)
from llamaswap.web.extract import JSON, MULTIPART, Extracted
from llamaswap.web.fastproxy import forward_fast
from llamaswap.web.filters import FilterError, apply_filters, use_model_name
from llamaswap.web.loading import LoadingStream
from llamaswap.web.names import Resolved
from llamaswap.web.proxy import CLIENT_GONE, ClientTracker, forward, headers_of, outgoing_pairs
from llamaswap.web.render import render_error
from llamaswap.web.upgrade import is_upgrade, request_head, splice

if TYPE_CHECKING:
    from llamaswap.web.app import App

log = Logger()


class ModelCall:
    """One model-dispatched request from admission to its single end."""

    def __init__(
        self,
        ctx: SiteContext,
        app: App,
        request: Request,
        ext: Extracted,
        resolved: Resolved,
        path: bytes,
        query: bytes,
        passthrough: bool = False,
        observe: bool = True,
        ignore_websockets: bool = False,
    ) -> None:
        self.ctx = ctx
        self.passthrough = passthrough
        self.observe = observe
        self.ignore_websockets = ignore_websockets
        self.app = app
        self.request = request
        self.ext = ext
        self.resolved = resolved
        self.path = path
        self.tracker = ClientTracker(request)
        self.upgrade = is_upgrade(request)
        self.grant: Any = None
        self.loading: LoadingStream | None = None
        self.ended = False
        self.observed = False
        self.announced = False
        self._unwatch: Callable[[], None] | None = None
        self.rec = RequestRecord(
            id=next_request_id(),
            started=ctx.reactor.seconds(),
            method=request.method.decode("latin-1"),
            path=path.decode("latin-1"),
            model_id=resolved.model_id,
            requested_name=resolved.requested,
            remote_ip=request_client_ip(request, self.app.config.trusted_proxies, ""),
        )
        if resolved.selector_id is not None:
            self.rec.metadata["selector"] = resolved.selector_id
        self.rec.cancel = self.cancel

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Rewrite the body, notify observers, then go local or to a peer."""
        try:
            if self.passthrough:
                pass
            elif self.resolved.kind == "peer":
                self._rewrite_for_peer()
            else:
                self._rewrite_for_local()
            body = self.ext.final_body()
        except FilterError as e:
            self._fail(InternalError(f"filter error: {e}"))
            return
        except LlamaSwapError as e:
            self._fail(e)
            return
        self.rec.req_body = body
        if self.upgrade and self.resolved.kind == "local":
            model = self.app.config.models[self.resolved.model_id]
            if model.ignore_websockets or self.ignore_websockets:
                self._ignored_websocket(body)
                return
        self.observed = self.observe
        if self.resolved.kind == "peer":
            self._forward_peer(body)
        else:
            self._admit_local(body)
        # Sent already when its model was ready: the observers' work does not delay it.
        self._announce()

    def _announce(self) -> None:
        """Tell observers the request started (once, before any other hook for it)."""
        if self.announced:
            return
        self.announced = True
        if not (self.observed and self.app.observers):
            return
        rec = self.rec
        rec.req_headers = {  # only observers read them (in-flight table, captures)
            k.decode("latin-1"): b", ".join(v).decode("latin-1")
            for k, v in self.request.requestHeaders.getAllRawHeaders()
        }
        notify(self.app.observers, "request_started", rec)

    def _rewrite_for_local(self) -> None:
        ext, resolved = self.ext, self.resolved
        model = self.app.config.models[resolved.model_id]
        if resolved.rewritten:
            ext.set_model(resolved.requested)
        if ext.kind == JSON and ext.json is not None:
            ext.changed = use_model_name(ext.json, model.use_model_name) or ext.changed
            ext.changed = apply_filters(ext.json, model.filters, resolved.requested) or ext.changed
        elif ext.kind == MULTIPART and model.use_model_name:
            ext.set_model(model.use_model_name)

    def _rewrite_for_peer(self) -> None:
        ext, resolved = self.ext, self.resolved
        peer = self.app.config.peers[resolved.peer_id or ""]
        if resolved.peer_model and ext.model != resolved.peer_model:
            ext.set_model(resolved.peer_model)
        if ext.kind == JSON and ext.json is not None:
            ext.changed = apply_filters(ext.json, peer.filters, resolved.requested) or ext.changed

    # -- local ---------------------------------------------------------------------------

    def _wants_loading(self) -> bool:
        model = self.app.config.models[self.resolved.model_id]
        if not (model.send_loading_state and self.ext.stream):
            return False
        if not self.path.startswith(b"/v1/chat/completions"):
            return False
        upstream = self.app.upstreams.get(self.resolved.model_id)
        return upstream is None or upstream.state != ProcessState.READY

    def _admit_local(self, body: bytes) -> None:
        on_position = None
        if self._wants_loading():
            self.loading = LoadingStream(
                self.request, self.resolved.model_id, self.ctx.reactor, lambda: self.tracker.open
            )
            self.loading.start()
            on_position = self.loading.position
        d = self.app.router.request(self.resolved.model_id, on_position)
        remove = self.tracker.on_gone(d.cancel)

        def granted(grant: Any) -> None:
            remove()
            self.grant = grant
            self.app.router.hold_for(grant, self.request.notifyFinish())
            self.rec.metadata.update(getattr(grant, "metadata", None) or {})
            if not self.tracker.open:
                self._end(CLIENT_GONE)
                return
            if self.loading is not None:
                self.loading.finish().addCallback(lambda _: self._forward_local(grant, body))
            else:
                self._forward_local(grant, body)

        def refused(failure: Failure) -> None:
            remove()
            if failure.check(CancelledError) or not self.tracker.open:
                self._end(CLIENT_GONE)
            elif failure.check(LlamaSwapError):
                self._fail(failure.value)
            else:
                self._fail_unexpected(failure)

        d.addCallbacks(granted, refused).addErrback(self._fail_unexpected)
        if not d.called:
            self._announce()  # it waits for its model: the in-flight table shows it meanwhile

    def _forward_local(self, grant: Any, body: bytes) -> None:
        if not self.tracker.open:
            self._end(CLIENT_GONE)
            return
        model = self.app.config.models[self.resolved.model_id]
        upstream = grant.upstream
        if upstream.state != ProcessState.READY:
            # stopped, crashed or swapped out since the grant (or the loading stream's end)
            self._fail(ProcessNotReady(self.resolved.model_id))
            return
        self._forward(
            (self.resolved.model_id, model.timeouts, upstream),
            join_url(upstream.proxy_url, self.path, self.ext.query),
            outgoing_pairs(self.request, reduce_encoding=self._recording()),
            body,
            f"upstream {self.resolved.model_id}",
            model.timeouts.response_header,
        )

    def _recording(self) -> bool:
        """True when observers will parse this response (SPEC 7.1 Accept-Encoding rule)."""
        return self.observed and bool(self.app.observers) and not self.upgrade

    def _ignored_websocket(self, body: bytes) -> None:
        """compat.ignoreWebsockets (SPEC 4.10): unscheduled, uncounted, cut when the model stops."""
        self.resolved.release()  # SPEC 5.2: not counted by spillover selectors while open
        model_id = self.resolved.model_id
        upstream = self.app.upstreams.get(model_id)
        if upstream is None or upstream.state != ProcessState.READY:
            self._fail(
                Conflict(
                    f"model {model_id} is not loaded; ignored websocket requests cannot start it"
                )
            )
            return
        self._unwatch = upstream.add_state_listener(self._cut_unless_ready)
        self._forward_local(_Unaccounted(upstream), body)

    def _cut_unless_ready(self, model_id: str, old: ProcessState, new: ProcessState) -> None:
        """An ignored websocket does not hold its model: it goes when the model stops."""
        if new != ProcessState.READY:
            self.cancel()

    # -- peers ---------------------------------------------------------------------------

    def _forward_peer(self, body: bytes) -> None:
        peer = self.app.config.peers[self.resolved.peer_id or ""]
        overrides: list[tuple[bytes, bytes]] = []
        if peer.api_key:
            key = peer.api_key.encode()
            overrides = [(b"authorization", b"Bearer " + key), (b"x-api-key", key)]
        headers = outgoing_pairs(
            self.request,
            forwarded_for=False,
            keep_forwarded=False,
            overrides=overrides,
            drop=(b"host",),
            reduce_encoding=self._recording(),
        )
        self._forward(
            (f"peer:{peer.id}", peer.timeouts, None),
            join_url(peer.proxy, self.path, self.ext.query),
            headers,
            body,
            f"peer proxy {peer.id}",
            peer.timeouts.response_header,
        )

    # -- common --------------------------------------------------------------------------

    def _forward(
        self,
        pool_key: tuple[str, Timeouts, Any],
        url: bytes,
        headers: Any,
        body: bytes,
        name: str,
        timeout: float,
    ) -> None:
        if self.upgrade:
            self._forward_upgrade(url, headers, body, name, pool_key[1])
            return
        on_response: Callable[[Any], bool] | None = None
        if self.loading is not None:
            on_response = _keep_loading_head
        key, timeouts, upstream = pool_key
        pools = self.ctx.pools
        exchange: dict[str, Any] = {
            "reactor": self.ctx.reactor,
            "tracker": self.tracker,
            "method": self.request.method,
            "headers": headers,
            "body": body,
            "target_name": name,
            "response_header_timeout": timeout,
            "rec": self.rec,
            "observers": self.app.observers if self.observed else (),
            "on_response": on_response,
        }
        d: Deferred[str | None]
        if url.startswith(b"http://"):
            # plain http: the lean client; https (peers): Agent
            slash = url.find(b"/", 7)
            target = url[slash:] if slash >= 0 else b"/"
            pool = pools.fast_pool_for(key, url, timeouts, upstream)
            d = forward_fast(pool=pool, target=target, **exchange)
        else:
            exchange["headers"] = headers_of(headers)
            d = forward(agent=pools.agent_for(key, timeouts, upstream), url=url, **exchange)
        d.addCallbacks(self._end, self._forward_failed).addErrback(self._fail_unexpected)

    def _forward_upgrade(
        self, url: bytes, headers: Any, body: bytes, name: str, timeouts: Timeouts
    ) -> None:
        parts = urlsplit(url.decode("latin-1"))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = request_head(self.request, target.encode("latin-1"), headers, body)
        d = splice(
            reactor=self.ctx.reactor,
            request=self.request,
            base_url=url.decode("latin-1"),
            head=head,
            connect_timeout=timeouts.connect,
            target_name=name,
            routes=self.ctx.pools.routes(timeouts),
        )
        d.addCallbacks(self._end, self._forward_failed).addErrback(self._fail_unexpected)

    def _forward_failed(self, failure: Failure) -> None:
        if failure.check(LlamaSwapError):
            self._fail(failure.value)
        else:
            self._fail_unexpected(failure)

    def _fail(self, error: LlamaSwapError) -> None:
        """Answer with ``error`` if still possible, then end."""
        rec = self.rec
        if rec.status is None:
            rec.status = 200 if self.loading is not None else error.status
            rec.resp_content_type = "application/json"
        if self.tracker.open:
            request = self.request
            if self.loading is not None:
                loading = self.loading
                loading.finish().addCallback(lambda _: self._append_error(error))
                return
            if not request.startedWriting:
                request.write(render_error(request, error))
                request.finish()
            else:
                request.loseConnection()
        self._end(error.message)

    def _append_error(self, error: LlamaSwapError) -> None:
        if self.tracker.open:
            self.request.write(error.body_bytes())
            self.request.finish()
        self._end(error.message)

    def _fail_unexpected(self, failure: Failure) -> None:
        log.failure("request {uri} failed unexpectedly", failure, uri=self.request.uri)
        self._fail(InternalError(f"internal error: {failure.getErrorMessage()}"))

    def cancel(self) -> None:
        """Abort this request and its upstream connection (the in-flight cancel API)."""
        if self.tracker.open:
            channel = self.request.channel
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()  # type: ignore[attr-defined]

    def _end(self, outcome: str | None) -> None:
        """The one place a request ends: release the grant, notify observers."""
        if self.ended:
            return
        self.ended = True
        self._announce()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self.loading is not None:
            self.loading.stop()
        rec = self.rec
        rec.finished_at = self.ctx.reactor.seconds()
        rec.error = outcome
        if self.grant is not None:
            try:
                self.grant.done()
            except Exception:
                log.failure("grant.done() failed for {model}", model=self.resolved.model_id)
        self.resolved.release()
        rec.cancel = None  # nothing left to cancel; frees the call without the cyclic collector
        if self.observed and self.app.observers:
            # Counting tokens, metrics, the activity row: after the next request is sent.
            self.ctx.chores.add(notify, self.app.observers, "request_finished", rec)


class _Unaccounted:
    """Stands in for a grant for requests that bypass the scheduler (ignored websockets)."""

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream


def _keep_loading_head(response: Any) -> bool:
    """The loading stream already sent 200 text/event-stream: keep it."""
    return False

