"""``GET /logs`` and the ``/logs/stream[/<id>]`` live log streams (SPEC §5.6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.observe.streaming import BoundedStream
from llamaswap.observe.types import LogSource
from llamaswap.web.render import render_error

INVALID_LOGGER = "invalid logger. Use 'proxy', 'upstream' or a model's ID"
STREAM_BUFFER = 256 * 1024


def combined_log(app: Any) -> LogSource:
    """The stdout-bound ("mux") log: ``extras['combined_log']`` when the service set it up."""
    log: LogSource | None = app.extras.get("combined_log")
    return log if log is not None else app.proxy_log


def select_log(app: Any, name: str) -> LogSource | None:
    """The log a ``/logs/stream/<name>`` asks for; models by id or alias, longest prefix."""
    if name == "":
        return combined_log(app)
    if name == "proxy":
        return app.proxy_log
    if name == "upstream":
        return app.upstream_log
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        model_id = app.config.resolve("/".join(parts[:end]))
        upstream = app.upstreams.get(model_id) if model_id is not None else None
        if upstream is not None:
            return upstream.logs
    return None


def track(app: Any, stream: BoundedStream) -> None:
    """Let the App's Observability close ``stream`` on reload/shutdown."""
    obs = app.extras.get("observability")
    if obs is not None:
        obs.track(stream)


def has_query_flag(request: Request, name: str) -> bool:
    """True when the query string holds ``name``, with or without a value."""
    query = (request.uri or b"").partition(b"?")[2].decode("utf-8", "replace")
    return name in parse_qs(query, keep_blank_values=True)


def _path(request: Request) -> str:
    return unquote((request.path or b"").decode("utf-8", "replace"))


class LogsResource(Resource):
    """Serves ``/logs`` and everything below it; works out the sub-path from request.path."""

    isLeaf = True

    def __init__(self, get_app: Callable[[], Any]) -> None:
        """Look the App up on every request (it is replaced on reload)."""
        super().__init__()
        self._get_app = get_app

    def render_GET(self, request: Request) -> bytes | int:
        """History as text, or a live stream."""
        app = self._get_app()
        path = _path(request)
        path = "/logs/stream" if path == "/logs/stream/" else path.rstrip("/")
        if path == "/logs":
            accept = (request.getHeader(b"accept") or b"").decode("latin-1").lower()
            if "text/html" in accept:
                request.redirect(b"/ui/")
                return b""
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return combined_log(app).history()
        if path == "/logs/stream" or path.startswith("/logs/stream/"):
            return self._stream(request, app, path[len("/logs/stream/") :])
        return render_error(request, 404, "404 page not found")

    def _stream(self, request: Request, app: Any, name: str) -> bytes | int:
        log = select_log(app, name)
        if log is None:
            return render_error(request, 400, INVALID_LOGGER)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-accel-buffering", b"no")
        stream = BoundedStream(request, max_bytes=STREAM_BUFFER)
        history = b"" if has_query_flag(request, "no-history") else log.history()
        request.write(history)  # even empty: sends the headers now
        stream.on_close(log.subscribe(stream.write))
        track(app, stream)
        return NOT_DONE_YET
