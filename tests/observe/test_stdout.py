"""StdoutWriter: stdout written by a thread; a stuck reader costs dropped lines, not a stall."""

from __future__ import annotations

import threading

import pytest

from llamaswap.observe import stdout as stdout_module
from llamaswap.observe.stdout import StdoutWriter, gap_line

# Long enough for a loaded CI machine; the tests only wait this long when they fail.
WAIT = 10.0


class StuckReader:
    """A stdout whose first write blocks until ``release()``; keeps what it was given."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.blocked = threading.Event()
        self._release = threading.Event()

    def write(self, data: bytes) -> None:
        if not self.written:
            self.blocked.set()
            assert self._release.wait(WAIT), "never released"
        self.written.append(data)

    def release(self) -> None:
        self._release.set()


def test_lines_written_in_order_and_together_by_close() -> None:
    """Lines reach stdout in order, gathered into one write; close() waits for them."""
    out: list[bytes] = []
    writer = StdoutWriter(out.append, linger=3600)  # only close() ends the gathering
    for i in range(100):
        writer(b"line %d\n" % i)
    writer.close(WAIT)
    assert out == [b"".join(b"line %d\n" % i for i in range(100))]
    writer(b"after close\n")
    assert b"after close" not in b"".join(out)


def test_stuck_reader_never_blocks_the_caller_and_the_gap_is_marked() -> None:
    """While stdout is stuck, writes return at once; what overflows is dropped and marked."""
    reader = StuckReader()
    writer = StdoutWriter(reader.write, max_pending=10)
    writer(b"a")
    assert reader.blocked.wait(WAIT)  # the thread is inside write(b"a"), stuck
    writer(b"bbbbbb")  # 6 bytes wait
    writer(b"cccccc")  # 12 > 10: dropped
    writer(b"dd\n")  # 9 <= 10 but after a gap: marked, then kept
    writer(b"eeeeee")  # 15 > 10: dropped, nothing kept after it
    reader.release()
    writer.close(WAIT)
    assert b"".join(reader.written) == (
        b"a" + b"bbbbbb" + gap_line(6) + b"dd\n" + gap_line(6)
    )


def test_close_gives_up_on_a_reader_that_never_reads() -> None:
    """Stopping waits at most its budget for a stuck stdout."""
    reader = StuckReader()
    writer = StdoutWriter(reader.write)
    writer(b"x")
    assert reader.blocked.wait(WAIT)
    writer.close(0.01)
    assert reader.written == []
    reader.release()


def test_a_write_interrupted_by_a_signal_handler_that_logs_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write made while a write is under way on the same thread (as from a signal
    handler: Twisted's SIGTERM handler logs) returns instead of waiting for itself."""
    reader = StuckReader()
    writer = StdoutWriter(reader.write, max_pending=10)
    writer(b"a")
    assert reader.blocked.wait(WAIT)
    writer(b"cccccccccccc")  # dropped: the next write marks the gap, inside the lock

    def gap_then_interrupted(dropped: int) -> bytes:
        monkeypatch.setattr(stdout_module, "gap_line", gap_line)
        writer(b"handler\n")  # what the signal handler's log line does, on the same thread
        return gap_line(dropped)

    monkeypatch.setattr(stdout_module, "gap_line", gap_then_interrupted)
    done = threading.Event()

    def interrupted_write() -> None:
        writer(b"dd\n")
        done.set()

    worker = threading.Thread(target=interrupted_write, daemon=True)
    worker.start()
    assert done.wait(WAIT), "the interrupted write deadlocked"
    reader.release()
    writer.close(WAIT)
    written = b"".join(reader.written)
    assert written.startswith(b"a") and b"handler\n" in written and b"dd\n" in written
