"""Simulated requests driven through RequestObservers, as the web layer drives them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.task import Clock

from llamaswap.observe.hooks import RequestObserver, RequestRecord

_ids = itertools.count(1000)


def sse_body(usage: dict[str, Any], words: Sequence[str] = ("Hel", "lo")) -> list[bytes]:
    """An OpenAI chat stream split in chunks, usage in the last data event."""
    chunks = []
    for word in words:
        event = {"choices": [{"delta": {"content": word}}]}
        chunks.append(b"data: " + json.dumps(event).encode() + b"\n\n")
    final = json.dumps({"choices": [], "usage": usage}).encode()
    chunks.append(b"data: " + final[:10])  # split mid-line on purpose
    chunks.append(final[10:] + b"\n\ndata: [DONE]\n\n")
    return chunks


def drive(
    observers: Sequence[RequestObserver],
    clock: Clock,
    *,
    model: str = "m1",
    path: str = "/v1/chat/completions",
    method: str = "POST",
    status: int = 200,
    content_type: str = "application/json",
    chunks: Sequence[bytes] = (),
    ttfb: float = 0.5,
    duration: float = 2.0,
    req_body: bytes = b'{"model":"m1"}',
    req_headers: dict[str, str] | None = None,
    finish: bool = True,
) -> RequestRecord:
    """Run one request's hooks in order, advancing ``clock`` for TTFB and duration."""
    rec = RequestRecord(
        id=next(_ids),
        started=clock.seconds(),
        method=method,
        path=path,
        model_id=model,
        requested_name=model,
        remote_ip="127.0.0.1",
        req_headers=req_headers or {"Content-Type": "application/json"},
        req_body=req_body,
    )
    for o in observers:
        o.request_started(rec)
    clock.advance(ttfb)
    rec.status = status
    rec.resp_content_type = content_type
    rec.resp_headers = {"Content-Type": content_type}
    rec.first_byte_at = clock.seconds()
    for o in observers:
        o.response_started(rec)
    for chunk in chunks:
        rec.bytes_out += len(chunk)
        for o in observers:
            o.response_chunk(rec, chunk)
    clock.advance(duration - ttfb)
    if finish:
        rec.finished_at = clock.seconds()
        for o in observers:
            o.request_finished(rec)
    return rec
