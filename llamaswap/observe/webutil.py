"""Helpers for the observability resources: paths, RFC3339 parsing, deferred JSON answers."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.web.render import render_error, write_json

_log = Logger()


def request_path(request: Request) -> str:
    """The percent-decoded path without the query."""
    return unquote((request.path or b"").decode("utf-8", "replace"))


def query(request: Request) -> dict[str, list[str]]:
    """The query string as text, blank values kept (``?no-history`` counts)."""
    raw = (request.uri or b"").partition(b"?")[2].decode("utf-8", "replace")
    return parse_qs(raw, keep_blank_values=True)


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC3339 timestamp with a zone, or None when it is not one."""
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    if when.tzinfo is None or "T" not in text.upper():
        return None
    return when.timestamp()


def answer_later(
    request: Request, d: Deferred[Any], render: Callable[[Any], Any], status: int = 200
) -> int:
    """Finish ``request`` with JSON when ``d`` fires (500 on failure; silent if the client left)."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def ok(result: Any) -> None:
        if not gone:
            request.write(write_json(request, render(result), status))
            request.finish()

    def failed(failure: Failure) -> None:
        _log.failure("observability query failed", failure)
        if not gone:
            request.write(render_error(request, 500, failure.getErrorMessage()))
            request.finish()

    d.addCallbacks(ok, failed)
    return NOT_DONE_YET


class ObserveResource(Resource):
    """Base of the observability endpoints: serves its whole subtree, answers HEAD like GET,
    and a wrong method with 405 + Allow (the web root calls ``render`` directly)."""

    isLeaf = True

    def __init__(self, get_app: Callable[[], Any]) -> None:
        """Look the App up on every request (it is replaced on reload)."""
        super().__init__()
        self._get_app = get_app

    def render(self, request: Request) -> bytes | int:
        """Dispatch to ``render_<METHOD>``; HEAD uses GET; others are 405."""
        method = (request.method or b"GET").decode("ascii", "replace")
        handler = getattr(self, f"render_{method}", None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "render_GET", None)
        if handler is None:
            names = {n[len("render_") :] for n in dir(self) if n.startswith("render_")}
            if "GET" not in names:
                names.discard("HEAD")  # Resource's default render_HEAD needs a render_GET
            allowed = sorted(names)
            request.setResponseCode(405)
            request.setHeader(b"allow", ", ".join(allowed).encode())
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Method Not Allowed\n"
        result: bytes | int = handler(request)
        return result
