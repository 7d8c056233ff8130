"""Token usage from upstream responses, fed chunk by chunk (SPEC §7.1 parsing rules).

Event streams are scanned line by line keeping only the unfinished line; only ``data:``
lines that mention usage/timings/metrics are JSON-decoded. JSON bodies are buffered up to a
cap and decoded at the end. gzip/deflate bodies are decompressed incrementally.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import attrs

DEFAULT_CAP = 1024 * 1024
_KEYS = (b'"usage"', b'"timings"', b'"metrics"')


@attrs.frozen
class TokenStats:
    """Token figures of one response; -1 means unknown, all zero when nothing was found."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    draft_tokens: int = 0
    draft_acc_tokens: int = 0
    prompt_per_second: float = 0.0
    tokens_per_second: float = 0.0
    timings_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``tokens`` object of an activity row."""
        return {
            "cache_tokens": self.cache_tokens,
            "draft_tokens": self.draft_tokens,
            "draft_acc_tokens": self.draft_acc_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "prompt_per_second": self.prompt_per_second,
            "tokens_per_second": self.tokens_per_second,
        }


def _num(obj: Any, key: str) -> float | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _usage_of(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    for candidate in (
        obj.get("usage"),
        (obj.get("response") or {}).get("usage") if isinstance(obj.get("response"), dict) else None,
        (obj.get("message") or {}).get("usage") if isinstance(obj.get("message"), dict) else None,
    ):
        if isinstance(candidate, dict):
            return candidate
    return None


@attrs.define
class _Found:
    input: float | None = None
    output: float | None = None
    cached: float | None = None
    timings: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    any: bool = False

    def add_usage(self, usage: dict[str, Any]) -> None:
        self.any = True
        value = _num(usage, "prompt_tokens")
        value = _num(usage, "input_tokens") if value is None else value
        if value:
            self.input = value
        value = _num(usage, "completion_tokens")
        value = _num(usage, "output_tokens") if value is None else value
        if value:
            self.output = value
        cached = _num(usage, "cache_read_input_tokens")
        for details in ("input_tokens_details", "prompt_tokens_details"):
            if cached is None:
                cached = _num(usage.get(details), "cached_tokens")
        if cached is not None:
            self.cached = cached

    def add_object(self, obj: Any) -> None:
        usage = _usage_of(obj)
        if usage is not None:
            self.add_usage(usage)
        if isinstance(obj, dict):
            if isinstance(obj.get("timings"), dict):
                self.any, self.timings = True, obj["timings"]
            if isinstance(obj.get("metrics"), dict):
                self.any, self.metrics = True, obj["metrics"]

    def stats(self) -> TokenStats:
        if not self.any:
            return TokenStats()
        inp, out = self.input or 0, self.output or 0
        cached = -1.0 if self.cached is None else self.cached
        draft = acc = -1.0
        pps = tps = -1.0
        timings_ms = 0.0
        t = self.timings
        if t is not None:
            prompt_n, predicted_n = _num(t, "prompt_n"), _num(t, "predicted_n")
            inp = inp if prompt_n is None else prompt_n
            out = out if predicted_n is None else predicted_n
            rate = _num(t, "prompt_per_second")
            pps = pps if rate is None else rate
            rate = _num(t, "predicted_per_second")
            tps = tps if rate is None else rate
            if _num(t, "cache_n") is not None:
                cached = _num(t, "cache_n") or 0
            if _num(t, "draft_n") is not None and _num(t, "draft_n_accepted") is not None:
                draft, acc = _num(t, "draft_n") or 0, _num(t, "draft_n_accepted") or 0
            timings_ms = (_num(t, "prompt_ms") or 0) + (_num(t, "predicted_ms") or 0)
        m = self.metrics
        if m is not None:
            spec = m.get("speculative_decoding")
            nd, na = _num(spec, "num_draft_tokens"), _num(spec, "num_accepted_draft_tokens")
            if nd is not None and na is not None:
                draft, acc = nd, na
            ttft = _num(m, "time_to_first_token_ms") or 0
            if ttft > 0:
                pps = (inp - max(cached, 0)) / (ttft / 1000)
            itl = _num(m, "mean_itl_ms") or 0
            if itl > 0:
                tps = 1000 / itl
        return TokenStats(
            input_tokens=int(inp),
            output_tokens=int(out),
            cache_tokens=int(cached),
            draft_tokens=int(draft),
            draft_acc_tokens=int(acc),
            prompt_per_second=float(pps),
            tokens_per_second=float(tps),
            timings_ms=float(timings_ms),
        )


class UsageExtractor:
    """Fed the response body chunk by chunk; ``stats()`` gives the tokens at the end."""

    def __init__(
        self,
        content_type: str = "",
        content_encoding: str = "",
        path: str = "",
        cap: int = DEFAULT_CAP,
    ) -> None:
        """Parse per ``content_type`` (event stream or JSON); keep at most ``cap`` bytes."""
        self._sse = "text/event-stream" in content_type.lower()
        self._infill = path.startswith("/infill")
        self._cap = cap
        self._buf = bytearray()
        self._overflow = False
        self._found = _Found()
        self.error: str | None = None
        encoding = content_encoding.strip().lower()
        self._inflate = None
        if encoding in ("gzip", "deflate"):
            self._inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
        self.body_seen = False

    def feed(self, data: bytes) -> None:
        """Take the next body chunk (never raises)."""
        if not data or self.error is not None:
            return
        self.body_seen = True
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as exc:
                self.error = f"response decompression failed: {exc}"
                return
        if self._sse:
            self._feed_lines(data)
        elif not self._overflow:
            if len(self._buf) + len(data) > self._cap:
                self._overflow = True
                self._buf.clear()
            else:
                self._buf += data

    def _feed_lines(self, data: bytes) -> None:
        self._buf += data
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            self._line(bytes(self._buf[start:end]))
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self._cap:  # an absurd line: forget it
            self._buf.clear()

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:") or not any(k in line for k in _KEYS):
            return
        if b'"timings"' not in line and b'"metrics"' not in line:
            compact = line.replace(b" ", b"")
            if b'"usage":null' in compact and compact.count(b'"usage"') == 1:
                return  # OpenAI include_usage streams: null on every chunk but the last
        try:
            obj = json.loads(line[5:])
        except (ValueError, RecursionError):
            return
        self._found.add_object(obj)

    def body(self) -> bytes:
        """The buffered (decompressed) body of a non-stream response, empty past the cap."""
        return b"" if self._sse else bytes(self._buf)

    def stats(self) -> TokenStats:
        """The token figures found (zeros when nothing, or after a decompression error)."""
        if self.error is not None:
            return TokenStats()
        if self._sse:
            if self._buf:
                self._line(bytes(self._buf))
                self._buf.clear()
            return self._found.stats()
        if self._overflow or not self._buf:
            return TokenStats()
        try:
            obj = json.loads(bytes(self._buf))
        except (ValueError, RecursionError):
            return TokenStats()
        found = _Found()
        if self._infill and isinstance(obj, list):
            last = obj[-1] if obj else None
            if isinstance(last, dict) and isinstance(last.get("timings"), dict):
                found.any, found.timings = True, last["timings"]
            return found.stats()
        if isinstance(obj, dict):
            if isinstance(obj.get("usage"), dict):
                found.add_usage(obj["usage"])
            if isinstance(obj.get("timings"), dict):
                found.any, found.timings = True, obj["timings"]
            if isinstance(obj.get("metrics"), dict):
                found.any, found.metrics = True, obj["metrics"]
        return found.stats()


def error_message(status: int, reason: str, body: bytes) -> str:
    """The activity ``error_msg`` of a non-200 response (SPEC §7.1)."""
    text = ""
    try:
        obj = json.loads(body) if body else None
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error")
        candidates = [err.get("message") if isinstance(err, dict) else None, err]
        candidates += [obj.get("message"), obj.get("detail")]
        for c in candidates:
            if isinstance(c, str) and c.strip():
                text = c
                break
    if not text:
        return f"{status} {reason}".strip()
    raw = text.encode()
    return raw[:500].decode("utf-8", "ignore") + "..." if len(raw) > 500 else text
