"""The activity sink: turns each finished POST into a row, a capture and an ``activity`` event."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web.http import RESPONSES

from llamaswap.observe.activity import ActivityStore
from llamaswap.observe.captures import Capture, CaptureCache, inflate, make_capture
from llamaswap.observe.hooks import RequestRecord
from llamaswap.observe.pipeline import Finished
from llamaswap.observe.tokens import TokenStats, error_message

_log = Logger()


def build_row(f: Finished) -> dict[str, Any]:
    """The activity row of a finished request (SPEC §7.1)."""
    rec, tokens = f.rec, f.tokens
    status = rec.status or 0
    error: str | None = None
    if f.decode_error:
        error, tokens = f.decode_error, TokenStats()
    elif rec.status is None:
        error = rec.error or "no response"
    elif status != 200:
        reason = RESPONSES.get(status, b"").decode("latin-1")
        error = error_message(status, reason, f.error_body)
    elif rec.error:
        error = rec.error
    end = rec.finished_at if rec.finished_at is not None else rec.started
    duration_ms = max((end - rec.started) * 1000.0, tokens.timings_ms)
    return {
        "timestamp": rec.started,
        "model": rec.model_id,
        "req_path": rec.path.split("?", 1)[0],
        "resp_content_type": rec.resp_content_type,
        "resp_status_code": status,
        **tokens.to_json(),
        "duration_ms": int(duration_ms),
        "ttft_ms": ttft_ms(rec),
        "error_msg": error,
        "metadata": dict(rec.metadata),
    }


def ttft_ms(rec: RequestRecord) -> int | None:
    """Milliseconds from arrival to the answer's first body byte; None when none was sent."""
    if rec.first_byte_at is None:
        return None
    return max(0, int((rec.first_byte_at - rec.started) * 1000))


class ActivityRecorder:
    """A pipeline sink: store the row, keep the capture, then tell ``listeners`` the id."""

    def __init__(self, store: ActivityStore, captures: CaptureCache) -> None:
        """Record into ``store``; keep captures in ``captures``."""
        self.store = store
        self.captures = captures
        self.listeners: list[Callable[[int], None]] = []

    def __call__(self, f: Finished) -> None:
        """Record POST requests only (SPEC §7.1)."""
        if f.rec.method.upper() != "POST":
            return
        # The store gives the id at once (the row follows with its batch), so nothing
        # waits for the database here and nothing is left to do when the batch is in.
        row_id = self.store.insert(build_row(f))
        capture = self._capture(f, row_id)
        if capture is not None:
            self.captures.add(capture)
        for listener in list(self.listeners):
            try:
                listener(row_id)
            except Exception:
                _log.failure("activity listener failed")

    def _capture(self, f: Finished, row_id: int) -> Capture | None:
        """The request's capture; None when not kept."""
        if not self.captures.enabled or f.decode_error:
            return None
        encoding = next(
            (v for k, v in f.rec.resp_headers.items() if k.lower() == "content-encoding"), ""
        )
        body = f.resp_body
        if body is not None:
            body = inflate(body, encoding, self.captures.max_bytes)
        return make_capture(
            row_id, f.rec.path, f.rec.status, f.rec.req_headers, f.rec.req_body,
            f.rec.resp_headers, body,
        )  # fmt: skip


def rfc3339(ts: float, timespec: str = "seconds") -> str:
    """Local-time RFC3339 text of an epoch timestamp."""
    text = datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def row_json(row: dict[str, Any], captures: CaptureCache) -> dict[str, Any]:
    """An activity row as the API shows it."""
    out: dict[str, Any] = {
        "id": row["id"],
        "timestamp": rfc3339(row["timestamp"]),
        "model": row["model"],
        "req_path": row["req_path"],
        "resp_content_type": row["resp_content_type"],
        "resp_status_code": row["resp_status_code"],
        "tokens": {
            k: row[k]
            for k in (
                "cache_tokens",
                "draft_tokens",
                "draft_acc_tokens",
                "input_tokens",
                "output_tokens",
                "prompt_per_second",
                "tokens_per_second",
            )
        },
        "duration_ms": row["duration_ms"],
        "ttft_ms": row.get("ttft_ms"),
        "has_capture": row["id"] in captures,
    }
    if row.get("error_msg"):
        out["error_msg"] = row["error_msg"]
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    if metadata:
        out["metadata"] = metadata
    return out
