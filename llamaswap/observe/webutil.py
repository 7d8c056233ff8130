"""Helpers for the observability resources: paths, RFC3339 parsing, deferred JSON answers."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
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
