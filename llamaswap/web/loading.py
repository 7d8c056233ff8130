"""The loading-state stream (SPEC 4.8): typed-out SSE reasoning while a model starts.

The stream starts with 200 ``text/event-stream`` at once. Every 750 ms it reports a new
queue position, a remark, or a dot; text is typed in 5-character events at about 75
characters per second. ``finish`` types the "Done!" lines (waiting at most one second)
and then the real upstream body is appended to the same response by the caller.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.web.server import Request

RULE = "\u2501" * 5
TICK = 0.75
CHARS_PER_SECOND = 75.0
CHUNK = 5
FINISH_BUDGET = 1.0

REMARKS: tuple[str, ...] = (
    "Reticulating splines",
    "Waking up the hamsters",
    "Warming up the tensor cores",
    "Convincing the weights to line up",
    "Counting attention heads twice",
    "Politely asking the GPU for memory",
    "Untangling the KV cache",
    "Feeding the tokenizer",
    "Dusting off the embeddings",
    "Negotiating with the page cache",
    "Herding quantized llamas",
    "Aligning the layers, mostly",
    "Teaching the model its own name",
    "Spinning up the matrix multipliers",
    "Checking the context window for drafts",
    "Loading a few billion opinions",
)


def sse_event(text: str) -> bytes:
    """One loading event carrying ``text`` as reasoning content."""
    payload = {"choices": [{"delta": {"reasoning_content": text}}]}
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


def chunked(text: str) -> list[str]:
    """``text`` split into 5-character pieces."""
    return [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]


class LoadingStream:
    """Writes the loading messages for one request until ``finish`` is called."""

    def __init__(
        self,
        request: Request,
        model_id: str,
        reactor: Any,
        is_open: Callable[[], bool],
        rng: random.Random | None = None,
        remarks: Sequence[str] = REMARKS,
    ) -> None:
        self._request = request
        self._model_id = model_id
        self._reactor = reactor
        self._is_open = is_open
        self._rng = rng or random.Random()
        self._remarks = list(remarks)
        self._rng.shuffle(self._remarks)
        self._queue: deque[str] = deque()
        self._typing: IDelayedCall | None = None
        self._tick_call: IDelayedCall | None = None
        self._position: int | None = None
        self._shown_position: int | None = None
        self._next_remark_at = 0.0
        self._remark_index = 0
        self._started_at = 0.0
        self._done: Deferred[None] | None = None
        self._budget: IDelayedCall | None = None
        self.stopped = False

    def start(self) -> None:
        """Send the 200 head and the first lines, then tick every 750 ms."""
        req = self._request
        req.setResponseCode(200)
        req.setHeader(b"content-type", b"text/event-stream")
        req.setHeader(b"cache-control", b"no-cache")
        req.setHeader(b"connection", b"keep-alive")
        req.write(b"")
        self._started_at = self._reactor.seconds()
        self._line(RULE)
        self._line(f"llama-swap loading model: {self._model_id}")
        self._tick_call = self._reactor.callLater(TICK, self._tick)

    def position(self, n: int) -> None:
        """Remember the latest queue position; shown on the next tick."""
        self._position = n

    def _line(self, text: str) -> None:
        self._queue.extend(chunked(text))
        self._queue.append("\n")
        self._kick()

    def _say(self, text: str) -> None:
        self._queue.append("\n")
        self._queue.extend(chunked(text))
        self._queue.append(" ")
        self._kick()

    def _tick(self) -> None:
        self._tick_call = None
        if self.stopped or not self._is_open():
            self.stop()
            return
        now = self._reactor.seconds()
        if self._position is not None and self._position != self._shown_position:
            self._shown_position = self._position
            self._say(f"Queue position: #{self._position}")
        elif now >= self._next_remark_at:
            remark = self._remarks[self._remark_index % len(self._remarks)]
            self._remark_index += 1
            self._next_remark_at = now + self._rng.uniform(5, 9)
            self._say(remark)
        elif not self._queue:
            self._queue.append(".")
            self._kick()
        self._tick_call = self._reactor.callLater(TICK, self._tick)

    def _kick(self) -> None:
        if self._typing is None and not self.stopped:
            self._type_next()

    def _type_next(self) -> None:
        self._typing = None
        if self.stopped or not self._is_open():
            self.stop()
            return
        if not self._queue:
            if self._done is not None:
                self._finished()
            return
        text = self._queue.popleft()
        self._request.write(sse_event(text))
        delay = len(text.encode()) / CHARS_PER_SECOND
        self._typing = self._reactor.callLater(delay, self._type_next)

    def finish(self) -> Deferred[None]:
        """Type the closing lines (at most one second more); fires when writing may go on."""
        if self._done is None:
            self._done = Deferred()
            if self._tick_call is not None and self._tick_call.active():
                self._tick_call.cancel()
            self._tick_call = None
            if self.stopped:
                self._done.callback(None)
                return self._done
            took = self._reactor.seconds() - self._started_at
            self._queue.append("\n")
            self._line(f"Done! ({took:.2f}s)")
            self._line(RULE)
            self._line(" ")
            self._budget = self._reactor.callLater(FINISH_BUDGET, self._finished)
        return self._done

    def _finished(self) -> None:
        self.stop()
        if self._done is not None and not self._done.called:
            self._done.callback(None)

    def stop(self) -> None:
        """Write nothing more (client gone, or finished)."""
        self.stopped = True
        for call in (self._typing, self._tick_call, self._budget):
            if call is not None and call.active():
                call.cancel()
        self._typing = self._tick_call = self._budget = None
        self._queue.clear()
