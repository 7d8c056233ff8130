"""The contract between the request path and observers: one record per request, four hooks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs
from twisted.logger import Logger

_log = Logger()
_ids = itertools.count(1)


def next_request_id() -> int:
    """A process-wide increasing request id."""
    return next(_ids)


@attrs.define(eq=False)
class RequestRecord:
    """What is known about one model-dispatched request; filled in as it progresses."""

    id: int
    started: float
    method: str
    path: str
    model_id: str
    requested_name: str
    remote_ip: str
    req_headers: dict[str, str] = attrs.field(factory=dict)
    req_body: bytes = b""
    status: int | None = None
    resp_headers: dict[str, str] = attrs.field(factory=dict)
    resp_content_type: str = ""
    first_byte_at: float | None = None
    finished_at: float | None = None
    bytes_out: int = 0
    error: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    cancel: Callable[[], None] | None = None


class RequestObserver(Protocol):
    """Something that watches requests (metrics, captures, in-flight table)."""

    def request_started(self, rec: RequestRecord) -> None:
        """The request was admitted for a model: sent upstream already, or waiting for it.

        Comes before every other hook for the same record.
        """

    def response_started(self, rec: RequestRecord) -> None:
        """The status and headers are known (rec.status, rec.resp_headers)."""

    def response_chunk(self, rec: RequestRecord, data: bytes) -> None:
        """A body chunk was written to the client; must be cheap."""

    def request_finished(self, rec: RequestRecord) -> None:
        """The request ended (rec.error is set when it did not end cleanly).

        Called a moment after the answer was sent (see ``llamaswap.web.chores``).
        """


def notify(observers: Iterable[RequestObserver], hook: str, rec: RequestRecord) -> None:
    """Call ``hook(rec)`` on every observer; exceptions are logged, never raised."""
    for observer in observers:
        try:
            getattr(observer, hook)(rec)
        except Exception:
            _log.failure(
                "request observer {observer!r}.{hook} failed", observer=observer, hook=hook
            )


def notify_chunk(observers: Iterable[RequestObserver], rec: RequestRecord, data: bytes) -> None:
    """Call ``response_chunk(rec, data)`` on every observer; exceptions are logged."""
    for observer in observers:
        try:
            observer.response_chunk(rec, data)
        except Exception:
            _log.failure("request observer {observer!r}.response_chunk failed", observer=observer)
