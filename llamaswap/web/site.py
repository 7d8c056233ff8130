"""The root of the HTTP surface: routing, CORS, auth, limits and the Site itself (SPEC 5.1, 5.3).

``build_site(get_app, reactor)`` returns a ``Site`` whose root dispatches every path:
model-dispatched inference routes, ``/upstream/...`` passthrough, health and redirects,
and the admin and observability resources mounted by path prefix. No traceback ever
reaches a client: unexpected errors become a 500 JSON envelope and a log entry.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes as unquote

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from llamaswap.config.model import ClientTimeouts, Config
from llamaswap.errors import PayloadTooLarge, Unauthorized, error_body
from llamaswap.web.channel import http_date, set_default_headers
from llamaswap.web.clientip import request_client_ip
from llamaswap.web.context import InternalError, SiteContext
from llamaswap.web.deadlines import ClientDeadlines, TimedChannel
from llamaswap.web.flush import flush_now
from llamaswap.web.inference import render_model_request
from llamaswap.web.pools import UpstreamPools
from llamaswap.web.render import render_error
from llamaswap.web.target import origin_form

if TYPE_CHECKING:
    from llamaswap.web.app import App

log = Logger()

JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/reranking",
    "/rerank",
    "/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/audioapi/v1/tasks/run",
    "/v/chat/completions",
    "/v/responses",
    "/v/completions",
    "/v/messages",
    "/v/messages/count_tokens",
    "/v/embeddings",
    "/v/rerank",
    "/v/reranking",
)
MULTIPART_ROUTES = ("/v1/audio/transcriptions", "/v1/images/edits")
GET_ROUTES = ("/sdapi/v1/loras", "/props")
BOTH_ROUTES = ("/v1/audio/voices",)

CORS_DEFAULT_HEADERS = b"Content-Type, Authorization, Accept, X-Requested-With"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

Handler = Callable[[Request], "bytes | int"]

DEFAULT_CONFIG = Config()


def cors_allow_headers(requested: bytes | None) -> bytes:
    """The request's Access-Control-Request-Headers filtered to valid tokens (SPEC 5.1)."""
    if requested is None:
        return CORS_DEFAULT_HEADERS
    names = [n.strip() for n in requested.decode("latin-1").split(",")]
    return ", ".join(n for n in names if n and _TOKEN.match(n)).encode("latin-1")


def write_text(request: Request, text: str, status: int = 200) -> bytes:
    """A plain text answer."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode()


def redirect(request: Request, location: bytes, status: int = 302) -> bytes:
    """A redirect with an empty body."""
    request.setResponseCode(status)
    request.setHeader(b"location", location)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b""


def unclean(path: bytes) -> bytes | None:
    """The cleaned path when ``path`` has ``.``/``..`` segments or ``//``, else None."""
    if b"//" not in path and b"/." not in path:
        return None
    cleaned = posixpath.normpath(path.decode("latin-1"))
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith(b"/") and cleaned != "/":
        cleaned += "/"
    out = cleaned.encode("latin-1")
    return None if out == path else out


class Root(Resource):
    """Dispatches every request; a leaf so twisted.web never walks children."""

    isLeaf = True

    def __init__(
        self,
        ctx: SiteContext,
        mounts: Mapping[str, Resource] | None = None,
        ui: Resource | None = None,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.ui = ui
        self.mounts: dict[str, Resource] = dict(mounts or {})
        model = self._model
        self.routes: dict[bytes, dict[bytes, Handler]] = {}
        for path in (*JSON_ROUTES, *MULTIPART_ROUTES):
            self.routes[path.encode()] = {b"POST": model}
        for path in GET_ROUTES:
            self.routes[path.encode()] = {b"GET": model}
        for path in BOTH_ROUTES:
            self.routes[path.encode()] = {b"GET": model, b"POST": model}
        self.public: dict[bytes, dict[bytes, Handler]] = {
            b"/health": {b"GET": self._health},
            b"/wol-health": {b"GET": self._health},
            b"/": {b"GET": lambda r: redirect(r, b"/ui")},
            b"/upstream": {b"GET": lambda r: redirect(r, b"/ui/models")},
            b"/ui": {b"GET": lambda r: redirect(r, b"/ui/", 301)},
        }
        if ui is not None:
            self.public[b"/favicon.ico"] = {b"GET": ui.render}
        self._mount_order: list[str] = []
        self._sort_mounts()

    def mount(self, key: str, resource: Resource) -> None:
        """Serve ``/key`` and everything below it with ``resource`` (auth enforced)."""
        self.mounts[key.strip("/")] = resource
        self._sort_mounts()

    def _sort_mounts(self) -> None:
        self._mount_order = sorted(self.mounts, key=len, reverse=True)

    def render(self, request: Request) -> bytes | int:
        """Route the request; never let an exception escape to twisted.web."""
        try:
            return self._route(request)
        except Exception as e:
            log.failure(
                "unhandled error for {method} {uri}", method=request.method, uri=request.uri
            )
            if request.startedWriting:
                request.loseConnection()
                return NOT_DONE_YET
            return render_error(request, InternalError(f"internal error: {e}"))

    def _route(self, request: Request) -> bytes | int:
        if getattr(request, "too_large", False):
            return NOT_DONE_YET
        method = request.method
        if method == b"OPTIONS":
            return self._preflight(request)
        path = request.uri.split(b"?", 1)[0]
        cleaned = unclean(path)
        if cleaned is not None:
            query = request.uri[len(path) :]
            return redirect(request, cleaned + query, 301)
        lookup = b"GET" if method == b"HEAD" else method
        routes = self.routes.get(path)
        if routes is None or routes.get(lookup) != self._model:
            self.ctx.chores.run()  # what any other endpoint shows includes every answer sent
        public = self.public.get(path)
        if public is not None:
            return self._call(request, public, lookup)
        if self.ui is not None and path.startswith(b"/ui/"):
            return self.ui.render(request)  # static files: public, the app asks for the key
        app = self.ctx.get_app()
        if routes is not None:
            if lookup not in routes:
                return self._not_allowed(request, routes)
            if not self._authorized(request, app):
                return render_error(request, Unauthorized())
            return routes[lookup](request)
        if path == b"/comfyui" or path.startswith(b"/comfyui/"):
            if not self._authorized(request, app):
                return render_error(request, Unauthorized())
            from llamaswap.web.passthrough import render_comfyui

            return render_comfyui(self.ctx, request)
        if path.startswith(b"/upstream/"):
            if not self._authorized(request, app):
                return render_error(request, Unauthorized())
            from llamaswap.web.passthrough import render_passthrough

            return render_passthrough(self.ctx, request)
        text_path = path.decode("latin-1").lstrip("/")
        for key in self._mount_order:
            if text_path == key or text_path.startswith(key + "/"):
                if not self._authorized(request, app):
                    return render_error(request, Unauthorized())
                return self.mounts[key].render(request)
        return write_text(request, "404 page not found\n", 404)

    def _call(self, request: Request, routes: dict[bytes, Handler], method: bytes) -> bytes | int:
        handler = routes.get(method)
        if handler is None:
            return self._not_allowed(request, routes)
        return handler(request)

    def _not_allowed(self, request: Request, routes: dict[bytes, Handler]) -> bytes:
        allowed = sorted(routes)
        if b"GET" in routes:
            allowed.append(b"HEAD")
        request.setHeader(b"allow", b", ".join(allowed))
        return write_text(request, "Method Not Allowed\n", 405)

    @staticmethod
    def _authorized(request: Request, app: App) -> bool:
        from llamaswap.web.auth import authorize

        return authorize(request, app.config.api_keys)

    def _model(self, request: Request) -> bytes | int:
        return render_model_request(self.ctx, request)

    @staticmethod
    def _health(request: Request) -> bytes:
        return write_text(request, "OK")

    @staticmethod
    def _preflight(request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(
            b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
        )
        request.setHeader(
            b"access-control-allow-headers",
            cors_allow_headers(request.getHeader(b"access-control-request-headers")),
        )
        request.setHeader(b"access-control-max-age", b"86400")
        return b""


class LlamaSwapRequest(Request):
    """A Request that refuses bodies over the configured limit before buffering them."""

    too_large = False
    _received = 0
    _limit = 0

    started_at = 0.0

    def gotLength(self, length: int | None) -> None:
        """Reject a declared Content-Length over the limit at once (413, then close)."""
        site = getattr(self.channel, "site", None)
        if isinstance(site, LlamaSwapSite):
            self.started_at = site.ctx.reactor.seconds()
        self._limit = site.max_body_bytes() if isinstance(site, LlamaSwapSite) else 0
        if self._limit and length is not None and length > self._limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Count chunked bodies too; refuse once they pass the limit."""
        if self.too_large:
            return
        self._received += len(data)
        if self._limit and self._received > self._limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    @property
    def body_received(self) -> int:
        """How many body bytes have arrived so far."""
        return self._received

    def _refuse(self) -> None:
        import json

        self.too_large = True
        limit_mb = self._limit // (1024 * 1024)
        error = PayloadTooLarge(f"request body is larger than maxRequestBodyMB ({limit_mb} MB)")
        body = json.dumps(error_body(413, error.message)).encode() + b"\n"
        transport = self.channel.transport if self.channel is not None else None
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Serve an absolute-form target as its path; its authority becomes the Host."""
        absolute = origin_form(path)
        if absolute is not None:
            path = absolute.target
            if absolute.host:
                self.requestHeaders.setRawHeaders(b"host", [absolute.host])
        super().requestReceived(command, path, version)

    @property
    def postpath(self) -> list[bytes]:
        """The path's segments, percent-decoded (computed when first asked for)."""
        value: list[bytes] | None = self.__dict__.get("_postpath")
        if value is None:
            value = self._postpath = list(map(unquote, self.path[1:].split(b"/")))
        return value

    @postpath.setter
    def postpath(self, value: list[bytes]) -> None:
        self._postpath = value

    def process(self) -> None:
        """Render with the root (a leaf: nothing to traverse); refused requests are done.

        twisted.web's ``process`` does the same with a resource traversal, a header-object
        call per default header and a fresh date string per request; this is the part of
        every request that runs before any of llamaswap's code.
        """
        if self.too_large:
            return
        site = self.site = self.channel.site  # type: ignore[attr-defined]
        set_default_headers(self.responseHeaders, http_date(site.ctx.reactor.seconds()))
        self.prepath = []
        self.sitepath: list[bytes] = []
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())


class LlamaSwapSite(Site):
    """The Site: knows the current App, owns the upstream pools, never shows tracebacks."""

    requestFactory = LlamaSwapRequest
    protocol = TimedChannel  # type: ignore[assignment]
    displayTracebacks = False

    def __init__(self, root: Root, ctx: SiteContext) -> None:
        # We parse bodies ourselves, once; twisted.web would parse forms (slowly) again.
        # No twisted.web idle timer: ClientDeadlines watches every phase of a connection.
        super().__init__(
            root, reactor=ctx.reactor, parsePOSTFormSubmission=False, timeout=None
        )
        self.root_resource = root
        self.ctx = ctx
        self.pools = ctx.pools
        self.deadlines = ClientDeadlines(ctx.reactor, self.client_timeouts)

    def startFactory(self) -> None:
        """Listening: start enforcing ``clientTimeouts``."""
        super().startFactory()
        self.deadlines.start()

    def stopFactory(self) -> None:
        """No longer listening: stop the deadline sweep."""
        self.deadlines.stop()
        super().stopFactory()

    def _current_config(self) -> Config:
        """The running config; the defaults while none is loaded."""
        try:
            return self.ctx.get_app().config
        except Exception:
            return DEFAULT_CONFIG

    def client_timeouts(self) -> ClientTimeouts:
        """The current ``clientTimeouts``."""
        return self._current_config().client_timeouts

    def max_body_bytes(self) -> int:
        """The current request body limit."""
        return int(self._current_config().max_request_body_mb) * 1024 * 1024

    def log(self, request: Any) -> None:
        """Access log line (SPEC 9.3), except health, metrics and performance polling.

        Called by ``Request.finish`` after the last write: the answer is sent first, and
        the line is written as one of the chores, so neither this client nor the next
        waits for it.
        """
        channel = getattr(request, "channel", None)
        if channel is not None:
            flush_now(channel.transport)
        if request.uri.startswith((b"/wol-health", b"/api/performance", b"/metrics")):
            return
        self.ctx.chores.add(self._log_line, request, self.ctx.reactor.seconds(),
                            self._current_config().trusted_proxies)

    @staticmethod
    def _log_line(request: Any, finished: float, trusted: tuple[Any, ...] = ()) -> None:
        """Write the access line of a request that finished at ``finished``.

        The client is the socket peer, or the address a ``trusted`` proxy forwarded.
        """
        path = request.uri
        ip = request_client_ip(request, trusted)
        agent = (request.getHeader(b"user-agent") or b"").decode("latin-1")
        started = getattr(request, "started_at", 0.0)
        took = go_duration(finished - started) if started else "0s"
        # Rendered here, once: twisted.logger's str.format machinery costs more than the
        # rest of a proxied request's bookkeeping.
        line = (
            f'Request {ip} "{request.method.decode("latin-1")} {path.decode("latin-1")} '
            f'{request.clientproto.decode("latin-1")}" {request.code} {request.sentLength} '
            f'"{agent}" {took}'
        )
        log.info("{access_line}", access_line=line)


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def go_duration(seconds: float) -> str:
    """A duration the way Go prints it: ``532.1µs``, ``12.3ms``, ``1.234567s``, ``2m0s``."""
    ns = max(0, round(seconds * 1e9))
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(f"{ns / 1e3:.3f}") + "µs"
    if ns < 1_000_000_000:
        return _trim(f"{ns / 1e6:.6f}") + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(f"{rest / 1e9:.9f}") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _optional_mounts(get_app: Callable[[], App], reactor: Any) -> dict[str, Resource]:
    mounts: dict[str, Resource] = {}
    try:
        from llamaswap.web.admin import build_admin_resources
    except ImportError:
        log.warn("admin resources not available")
    else:
        mounts.update(build_admin_resources(get_app, reactor))
    try:
        from llamaswap.observe.resources import (  # type: ignore[import-not-found,unused-ignore]
            build_observe_resources,
        )
    except ImportError:
        pass
    else:
        mounts.update(build_observe_resources(get_app))
    return mounts


def build_site(
    get_app: Callable[[], App], reactor: Any, pools: UpstreamPools | None = None
) -> LlamaSwapSite:
    """The Site serving every endpoint of SPEC 5.3 for whatever App ``get_app`` returns.

    ``pools`` carries the upstream proxy settings (direct connections when not given).
    """
    if pools is None:
        pools = UpstreamPools(reactor)
    ctx = SiteContext(get_app=get_app, reactor=reactor, pools=pools)
    from llamaswap.web.ui import UIResource

    root = Root(ctx, _optional_mounts(get_app, reactor), ui=UIResource())
    return LlamaSwapSite(root, ctx)
