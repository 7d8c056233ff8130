"""Upstream output: a bounded ring buffer with live subscribers, and a line logger.

Subscribers are called synchronously, on the reactor thread, for every write.
They must not block: a subscriber that forwards to a slow client must buffer or
drop on its own side (e.g. write to a transport that has a bounded buffer, or
skip data with a marker when the client falls behind). A subscriber that raises
is dropped and the error is logged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.logger import Logger

DEFAULT_MAX_BYTES = 100 * 1024
MAX_LINE = 16 * 1024

_log = Logger(namespace="llamaswap.process.logs")
_upstream_log = Logger(namespace="llamaswap.upstream")


class LogBuffer:
    """The last ``max_bytes`` of a byte stream, plus subscribers to new data."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._subscribers: list[Callable[[bytes], None]] = []

    def write(self, data: bytes) -> None:
        """Append ``data``, trim to ``max_bytes`` and pass it to every subscriber."""
        if not data:
            return
        if len(data) >= self.max_bytes:
            self._chunks.clear()
            self._chunks.append(data[-self.max_bytes :])
            self._size = self.max_bytes
        else:
            self._chunks.append(data)
            self._size += len(data)
            while self._size > self.max_bytes:
                first = self._chunks[0]
                excess = self._size - self.max_bytes
                if len(first) <= excess:
                    self._chunks.popleft()
                    self._size -= len(first)
                else:
                    self._chunks[0] = first[excess:]
                    self._size -= excess
        for cb in list(self._subscribers):
            try:
                cb(data)
            except Exception:
                _log.failure("log subscriber {cb!r} raised; dropping it", cb=cb)
                self._remove(cb)

    def history(self) -> bytes:
        """The buffered bytes (at most ``max_bytes``)."""
        if len(self._chunks) > 1:
            joined = b"".join(self._chunks)
            self._chunks.clear()
            self._chunks.append(joined)
        return self._chunks[0] if self._chunks else b""

    def tail_lines(self, count: int) -> list[str]:
        """The last ``count`` non-empty lines of the history, decoded leniently."""
        lines = self.history().decode("utf-8", "replace").splitlines()
        return [line for line in lines if line.strip()][-count:]

    def subscribe(self, cb: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``cb(data)`` for every later write; returns the unsubscribe function."""
        self._subscribers.append(cb)
        return lambda: self._remove(cb)

    def _remove(self, cb: Callable[[bytes], None]) -> None:
        """Drop one subscription (idempotent)."""
        try:
            self._subscribers.remove(cb)
        except ValueError:
            pass


class LineLogger:
    """Splits a byte stream into lines and emits one twisted.logger event per line.

    Each event carries ``model`` (the model id), ``stream`` ("stdout" or
    "stderr") and ``line``; observers can filter on ``log_namespace ==
    "llamaswap.upstream"``.
    """

    def __init__(self, model_id: str, stream: str) -> None:
        self.model_id = model_id
        self.stream = stream
        self._partial = b""

    def feed(self, data: bytes) -> None:
        """Log every complete line in ``data``; keep the rest for the next call."""
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            self._emit(raw)

    def flush(self) -> None:
        """Log a trailing line that had no newline."""
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, raw: bytes) -> None:
        """Emit one line as a log event."""
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        _upstream_log.info("[{model}] {line}", model=self.model_id, stream=self.stream, line=line)
