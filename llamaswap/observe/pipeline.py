"""The RequestObserver that parses each response once and hands the result to the sinks
(metrics, activity store): tokens from the body as it streams, plus a bounded body copy
for captures."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from llamaswap.observe.hooks import RequestRecord
from llamaswap.observe.tokens import TokenStats, UsageExtractor

_log = Logger()


@attrs.frozen
class Finished:
    """A finished request with what was learnt from its response."""

    rec: RequestRecord
    tokens: TokenStats
    resp_body: bytes | None  # the body as sent, None when not kept (too big, or not wanted)
    decode_error: str | None = None
    error_body: bytes = b""  # buffered body of a non-200 response (for its error message)


Sink = Callable[[Finished], None]


@attrs.define
class _State:
    extractor: UsageExtractor
    body: bytearray | None


class RequestPipeline:
    """Feeds one UsageExtractor per request and calls every sink when the request ends."""

    def __init__(self, sinks: list[Sink], keep_body_bytes: int = 0) -> None:
        """``keep_body_bytes`` > 0 keeps a response copy up to that size (for captures)."""
        self.sinks = sinks
        self._keep = keep_body_bytes
        self._live: dict[int, _State] = {}

    def request_started(self, rec: RequestRecord) -> None:
        """Nothing to do until the response starts."""

    def response_started(self, rec: RequestRecord) -> None:
        """Pick the parser from the response content type and encoding."""
        encoding = next(
            (v for k, v in rec.resp_headers.items() if k.lower() == "content-encoding"), ""
        )
        self._live[rec.id] = _State(
            UsageExtractor(rec.resp_content_type, encoding, rec.path),
            bytearray() if self._keep > 0 else None,
        )

    def response_chunk(self, rec: RequestRecord, data: bytes) -> None:
        """Parse incrementally; copy while under the capture size."""
        state = self._live.get(rec.id)
        if state is None:
            return
        state.extractor.feed(data)
        if state.body is not None:
            if len(state.body) + len(data) > self._keep:
                state.body = None
            else:
                state.body += data

    def request_finished(self, rec: RequestRecord) -> None:
        """Compute the tokens and call every sink (a failing sink is logged)."""
        state = self._live.pop(rec.id, None)
        if state is None:
            finished = Finished(rec, TokenStats(), None)
        else:
            ok = rec.status == 200
            finished = Finished(
                rec,
                state.extractor.stats() if ok else TokenStats(),
                None if state.body is None else bytes(state.body),
                state.extractor.error,
                b"" if ok else state.extractor.body(),
            )
        for sink in self.sinks:
            try:
                sink(finished)
            except Exception:
                _log.failure("request sink {sink!r} failed", sink=sink)
