"""Shared plumbing for llamaswap's own JSON/text endpoints: method dispatch, errors, waiting.

Each resource is mounted at a path key (``"api/profiles"``) and serves that path and
everything below it. Unknown sub-paths get Go's ``404 page not found``, known paths
with the wrong method ``405 Method Not Allowed`` with ``Allow``; a ``GET`` route also
answers ``HEAD``. Nothing raised by a handler escapes as a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.errors import LlamaSwapError
from llamaswap.web.app import App
from llamaswap.web.render import render_error

Handler = Callable[[Request], "bytes | int"]
TEXT_PLAIN = b"text/plain; charset=utf-8"

log = Logger(namespace="llamaswap.web.admin")


def write_text(request: Request, text: str, status: int = 200) -> bytes:
    """Set status and ``text/plain; charset=utf-8``; return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", TEXT_PLAIN)
    return text.encode("utf-8")


def not_found(request: Request) -> bytes:
    """Go's default 404 for a path nothing serves."""
    return write_text(request, "404 page not found\n", 404)


def not_allowed(request: Request, allowed: list[str]) -> bytes:
    """Go's default 405, with the methods this path does allow."""
    request.setHeader(b"allow", ", ".join(allowed).encode())
    return write_text(request, "Method Not Allowed\n", 405)


def internal_error(request: Request, failure: Failure) -> bytes:
    """Log ``failure`` and render it: its own status if it is ours, else 500."""
    error = failure.value
    if isinstance(error, LlamaSwapError):
        return render_error(request, error)
    log.failure("unexpected error serving {path}", failure, path=request.path)
    return render_error(request, 500, f"internal error: {error}")


class AdminResource(Resource):
    """A leaf resource at ``path`` whose sub-paths map to per-method handlers."""

    isLeaf = True

    def __init__(self, get_app: Callable[[], App], path: str) -> None:
        """Serve ``/<path>`` (and below) for the App that ``get_app`` returns now."""
        super().__init__()
        self.get_app = get_app
        self.path = path
        self._prefix = b"/" + path.encode()

    def rest(self, request: Request) -> str:
        """The percent-decoded part of the request path below this resource's path."""
        raw = request.path
        if raw.startswith(self._prefix):
            tail = raw[len(self._prefix) :]
        else:
            tail = b"".join(b"/" + segment for segment in request.postpath or [])
        return unquote_to_bytes(tail).decode("utf-8", "replace")

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Handlers by method for the sub-path ``rest``; None when nothing lives there."""
        raise NotImplementedError

    def render(self, request: Request) -> bytes | int:
        """Dispatch by sub-path and method; turn any exception into an error response."""
        try:
            handlers = self.routes(self.rest(request))
            if handlers is None:
                return not_found(request)
            method = request.method.decode("ascii", "replace")
            handler = handlers.get(method)
            if handler is None and method == "HEAD":
                handler = handlers.get("GET")
            if handler is None:
                allowed = list(handlers)
                if "GET" in allowed and "HEAD" not in allowed:
                    allowed.insert(allowed.index("GET") + 1, "HEAD")
                return not_allowed(request, allowed)
            return handler(request)
        except Exception:
            return internal_error(request, Failure())

    def respond_later(
        self, request: Request, waiting: Deferred[Any], on_success: Callable[[Any], bytes]
    ) -> int:
        """Answer once ``waiting`` fires; write nothing if the client has gone by then."""
        gone = False

        def client_gone(_: object) -> None:
            """Remember the request ended (finished or disconnected)."""
            nonlocal gone
            gone = True

        request.notifyFinish().addBoth(client_gone)

        def answer(result: object) -> None:
            """Render the outcome and finish, unless the client went away."""
            if gone:
                if isinstance(result, Failure):
                    log.failure("{path} failed after the client left", result, path=request.path)
                return
            try:
                if isinstance(result, Failure):
                    body = internal_error(request, result)
                else:
                    body = on_success(result)
            except Exception:
                body = internal_error(request, Failure())
            request.write(body)
            request.finish()

        waiting.addBoth(answer).addErrback(
            lambda f: log.failure("failed to answer {path}", f, path=request.path)
        )
        return NOT_DONE_YET
