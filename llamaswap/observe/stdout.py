"""Writing to the process's stdout from a thread, so a slow reader never stalls the reactor.

stdout is whatever started llamaswap: a terminal, a pipe to journald, a container's log
driver. When that reader stops reading (a paused pager, a log driver that cannot keep up
and blocks, as Docker's default mode does), a write to stdout blocks; on the reactor
thread, every request would wait with it. ``StdoutWriter`` hands the bytes to one writer
thread instead. At most ``max_pending`` bytes wait; past that, new data is dropped and the
line ``— <n> bytes dropped —`` marks the gap once the reader catches up, as the log
streams do.

The thread writes at most once per ``linger`` seconds: woken for the first line, it waits
that long for more before writing them together. Waking a thread for every line would
cost the reactor more than the write it saves.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

MAX_PENDING = 1024 * 1024
LINGER = 0.02


def write_real_stdout(data: bytes) -> None:
    """Write to the process's real stdout (twistd replaces ``sys.stdout`` with a logger)."""
    stream = sys.__stdout__
    if stream is not None:
        stream.buffer.write(data)
        stream.flush()


def gap_line(dropped: int) -> bytes:
    """The line that stands for ``dropped`` bytes a slow reader did not get."""
    return f"— {dropped} bytes dropped —\n".encode()


class StdoutWriter:
    """A callable that queues bytes for ``write``, which one thread calls (see module doc)."""

    def __init__(
        self,
        write: Callable[[bytes], object] = write_real_stdout,
        max_pending: int = MAX_PENDING,
        linger: float = LINGER,
    ) -> None:
        self._write = write
        self._max = max_pending
        self._linger = linger
        self._idle = False  # the thread waits for data (and wants a notify)
        # Reentrant: a signal handler runs on the main thread between any two bytecodes,
        # and Twisted's SIGTERM handler logs; if it interrupts a write that holds the lock,
        # its own write takes the lock again instead of waiting for itself forever.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._size = 0
        self._dropped = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def __call__(self, data: bytes) -> None:
        """Queue ``data``; never blocks (drops it when ``max_pending`` bytes already wait)."""
        with self._lock:
            if self._closed or not data:
                return
            if self._size + len(data) > self._max:
                self._dropped += len(data)
                return
            if self._dropped:
                self._pending.append(gap_line(self._dropped))
                self._dropped = 0
            self._pending.append(data)
            self._size += len(data)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llamaswap-stdout", daemon=True
                )
                self._thread.start()
            elif self._idle:
                self._wake.notify()

    def close(self, timeout: float) -> None:
        """Write what waits (for up to ``timeout`` seconds), then ignore further data."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle = True
                while not (self._pending or self._dropped or self._closed):
                    self._wake.wait()
                self._idle = False
                if self._linger > 0 and not self._closed:
                    self._wake.wait(self._linger)  # gather more lines (close() cuts it short)
                if self._dropped and not self._pending:
                    self._pending.append(gap_line(self._dropped))
                    self._dropped = 0
                chunks, self._pending, self._size = self._pending, [], 0
                if not chunks:
                    return  # closed, and everything written
            try:
                self._write(b"".join(chunks))
            except Exception:  # stdout closed under us: there is nobody left to tell
                pass
