"""A small OpenAI-compatible test upstream (``python -m llamaswap.testing.responder``).

Serves /health (503 until ``--start-delay`` passes), /v1/models, chat and text
completions (JSON or SSE with usage and llama-server ``timings``), embeddings,
audio transcriptions (multipart) and speech, rerank, Anthropic /v1/messages,
/v1/responses, /stats, and echoes any other request as JSON. Knobs in the JSON
body: ``x_chunks``, ``x_interval_ms``, ``x_delay_ms``, ``x_fail_status``,
``x_crash_after``. Abandoned streams are counted and reported on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from llamaswap.testing import payloads as p

STREAM_PATHS = {"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions",
                "/completion", "/v1/messages", "/v1/responses", "/responses"}
RERANK_PATHS = {"/v1/rerank", "/rerank", "/v1/reranking", "/reranking"}


class Stats:
    """Counters served at GET /stats."""

    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.abandoned = 0
        self.completed = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as JSON-able dict."""
        return {"requests": self.requests, "streams": self.streams,
                "abandoned": self.abandoned, "completed": self.completed}


class Responder(Resource):
    """Every path lands here; ``render`` dispatches on method and path."""

    isLeaf = True

    def __init__(self, reactor: Any, model: str, start_delay: float) -> None:
        super().__init__()
        self.reactor = reactor
        self.model = model
        self.ready_at = reactor.seconds() + start_delay
        self.stats = Stats()

    def render(self, request: server.Request) -> bytes | int:
        """Answer now, or after ``x_delay_ms``."""
        self.stats.requests += 1
        path = (request.path or b"/").decode("utf-8", "replace")
        raw = request.content.read() if request.content is not None else b""
        body = _json_body(request, raw)
        delay = float(body.get("x_delay_ms", 0) or 0) / 1000.0
        if delay <= 0:
            return self._answer(request, path, raw, body)
        timer = self.reactor.callLater(delay, self._answer_later, request, path, raw, body)
        request.notifyFinish().addErrback(lambda _: timer.cancel() if timer.active() else None)
        return server.NOT_DONE_YET

    def _answer_later(self, request: server.Request, path: str, raw: bytes,
                      body: dict[str, Any]) -> None:
        """The delayed answer."""
        out = self._answer(request, path, raw, body)
        if isinstance(out, bytes):
            request.write(out)
            request.finish()

    def _answer(self, request: server.Request, path: str, raw: bytes,
                body: dict[str, Any]) -> bytes | int:
        """Build the response for one request."""
        method = request.method.decode()
        model = str(body.get("model") or _form_text(request, b"model") or self.model)
        if path == "/health":
            if self.reactor.seconds() < self.ready_at:
                return _json(request, {"status": "loading"}, 503)
            return _json(request, {"status": "ok"})
        if path == "/stats":
            return _json(request, self.stats.as_dict())
        if path in ("/v1/models", "/models") and method == "GET":
            return _json(request, {"object": "list", "data": [
                {"id": self.model, "object": "model", "owned_by": "responder", "created": 0}]})
        fail = body.get("x_fail_status")
        if fail:
            message = f"responder failing with {int(fail)} as asked"
            return _json(request, {"error": {"message": message, "type": "server_error",
                                             "code": int(fail)}, "model": model}, int(fail))
        if method == "POST" and path in STREAM_PATHS:
            return self._generate(request, path, model, body)
        if method == "POST" and path in ("/v1/embeddings", "/embeddings"):
            return _json(request, p.embeddings(model, body))
        if method == "POST" and path in RERANK_PATHS:
            return _json(request, p.rerank(model, body))
        if method == "POST" and path == "/v1/audio/transcriptions":
            data = _form_field(request, b"file") or b""
            return _json(request, {
                "text": f"The length of the file is {len(data)} bytes", "model": model,
                "h_content_type": _header(request, b"content-type"),
                "h_content_length": _header(request, b"content-length")})
        if method == "POST" and path == "/v1/audio/speech":
            request.setHeader(b"content-type", b"audio/mpeg")
            request.setHeader(b"x-model", model.encode())
            text = str(body.get("input", ""))
            return b"ID3\x03\x00\x00\x00\x00\x00\x00" + text.encode() + b"\xff\xfb" * 16
        query = request.uri.split(b"?", 1)[1] if b"?" in request.uri else b""
        return _json(request, {
            "method": method, "path": path,
            "query": query.decode("utf-8", "replace"),
            "headers": {k.decode("latin-1"): ",".join(v.decode("latin-1") for v in vs)
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
            "body": raw.decode("utf-8", "replace"), "model": model})

    def _generate(self, request: server.Request, path: str, model: str,
                  body: dict[str, Any]) -> bytes | int:
        """Completions, messages and responses: whole JSON or an SSE stream."""
        chunks = int(body.get("x_chunks", 5))
        texts = p.pieces(chunks)
        prompt = p.prompt_tokens(body)
        kind = ("messages" if path == "/v1/messages" else
                "responses" if path.endswith("responses") else
                "chat" if path.endswith("chat/completions") else "text")
        rid = {"messages": "msg_", "responses": "resp_", "chat": "chatcmpl-", "text": "cmpl-"}[
            kind] + uuid.uuid4().hex[:12]
        if not body.get("stream"):
            build = {"messages": p.message, "responses": p.response,
                     "chat": p.chat_completion, "text": p.text_completion}[kind]
            self.stats.completed += 1
            return _json(request, build(model, rid, "".join(texts), prompt, len(texts)))
        self.stats.streams += 1
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        started = self.reactor.seconds()
        head: list[bytes] = []
        piece: Callable[[str], bytes]
        tail: Callable[[], list[bytes]]
        if kind == "messages":
            head = p.message_events_head(model, rid, prompt)
            piece = p.message_delta

            def tail() -> list[bytes]:
                return p.message_events_tail(len(texts))
        elif kind == "responses":
            whole = p.response(model, rid, "", prompt, 0)
            whole["status"] = "in_progress"
            head = [p.sse({"type": "response.created", "response": whole}, "response.created")]

            def piece(t: str) -> bytes:
                return p.sse({"type": "response.output_text.delta", "delta": t,
                              "output_index": 0, "content_index": 0},
                             "response.output_text.delta")

            def tail() -> list[bytes]:
                done = p.response(model, rid, "".join(texts), prompt, len(texts))
                return [p.sse({"type": "response.completed", "response": done},
                              "response.completed")]
        else:
            make = p.chat_chunk if kind == "chat" else p.text_chunk

            def piece(t: str) -> bytes:
                return p.sse(make(model, rid, t))

            def tail() -> list[bytes]:
                last = make(model, rid, None if kind == "chat" else "", "stop")  # type: ignore[arg-type]
                last["usage"] = p.usage(prompt, len(texts))
                last["timings"] = p.timings(prompt, len(texts), self.reactor.seconds() - started)
                return [p.sse(last), p.sse("[DONE]")]

        Stream(self, request, head, [piece(t) for t in texts], tail,
               interval=float(body.get("x_interval_ms", 0) or 0) / 1000.0,
               crash_after=body.get("x_crash_after")).start()
        return server.NOT_DONE_YET


class Stream:
    """Writes head events, then one event per piece ``interval`` apart, then the tail."""

    def __init__(self, owner: Responder, request: server.Request, head: list[bytes],
                 events: list[bytes], tail: Callable[[], list[bytes]], interval: float,
                 crash_after: Any) -> None:
        self.owner = owner
        self.request = request
        self.events = events
        self.head = head
        self.tail = tail
        self.interval = interval
        self.crash_after = int(crash_after) if crash_after is not None else None
        self.sent = 0
        self.gone = False
        self.timer: IDelayedCall | None = None

    def start(self) -> None:
        """Write the head and the first piece now."""
        self.request.notifyFinish().addErrback(self._abandoned)
        for event in self.head:
            self.request.write(event)
        self._next()

    def _next(self) -> None:
        """Write the next piece (or the tail and finish)."""
        self.timer = None
        if self.gone:
            return
        if self.crash_after is not None and self.sent >= self.crash_after:
            sys.stderr.write(f"crashing after {self.sent} chunks as asked\n")
            sys.stderr.flush()
            self.owner.reactor.callLater(0.05, os.kill, os.getpid(), signal.SIGKILL)
            self.gone = True
            return
        if self.sent < len(self.events):
            self.request.write(self.events[self.sent])
            self.sent += 1
            self.timer = self.owner.reactor.callLater(self.interval, self._next)
            return
        for event in self.tail():
            self.request.write(event)
        self.gone = True
        self.owner.stats.completed += 1
        self.request.finish()

    def _abandoned(self, reason: Failure) -> None:
        """The client went away before the end."""
        if self.gone:
            return
        self.gone = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.owner.stats.abandoned += 1
        path = (self.request.path or b"").decode()
        sys.stderr.write(f"abandoned stream {path} after {self.sent} chunks\n")
        sys.stderr.flush()


def _json_body(request: server.Request, raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} when it is not one."""
    if not raw.lstrip().startswith(b"{"):
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _form_field(request: server.Request, name: bytes) -> bytes | None:
    """A multipart/urlencoded form field (Twisted parses forms into ``args``)."""
    args: dict[bytes, list[Any]] = request.args or {}
    values = args.get(name)
    if not values:
        return None
    value = values[0]
    return value if isinstance(value, bytes) else str(value).encode()


def _form_text(request: server.Request, name: bytes) -> str | None:
    """A form field decoded as text."""
    value = _form_field(request, name)
    return value.decode("utf-8", "replace") if value is not None else None


def _header(request: server.Request, name: bytes) -> str:
    """A request header value ('' if absent)."""
    value = request.getHeader(name)
    return value.decode() if isinstance(value, bytes) else (value or "")


def _json(request: server.Request, obj: Any, status: int = 200) -> bytes:
    """Set status and JSON content type; return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj).encode() + b"\n"


class QuietSite(server.Site):
    """A Site without access logging (the responder must be cheap)."""

    def log(self, request: Any) -> None:
        """No access log."""


def main(argv: list[str] | None = None) -> int:
    """Parse flags, listen, run until SIGTERM (or ``--exit-after``)."""
    parser = argparse.ArgumentParser(prog="python -m llamaswap.testing.responder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default="responder")
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--fake-gpu", metavar="DIR", default=None,
                        help="report --fake-gpu-memory in DIR/<pid> (llamaswap.testing.fakegpu)")
    parser.add_argument("--fake-gpu-memory", default="1GiB")
    parser.add_argument("--fake-gpu-device", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fake_gpu is not None:
        from llamaswap.memory import parse_size
        from llamaswap.testing.fakegpu import report

        report(args.fake_gpu, args.fake_gpu_device, parse_size(args.fake_gpu_memory))
    if args.fail_start:
        sys.stderr.write(f"error: failed to load model {args.model} (--fail-start)\n")
        sys.stderr.flush()
        return 1
    from twisted.internet import reactor

    root = Responder(reactor, args.model, args.start_delay)
    port = reactor.listenTCP(args.port, QuietSite(root), interface=args.host)  # type: ignore
    print(f"listening on http://{args.host}:{port.getHost().port}", flush=True)  # type: ignore
    reactor.callLater(  # the cold-start benchmark reads this line
        max(0.0, root.ready_at - reactor.seconds()),
        lambda: print(f"healthy at {root.ready_at:.6f}", flush=True),
    )

    def on_term(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and args.ignore_sigterm:
            sys.stderr.write("ignoring SIGTERM\n")
            sys.stderr.flush()
            return
        sys.stderr.write(f"exiting on signal {signum}\n")
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if args.exit_after is not None:
        reactor.callLater(args.exit_after, os._exit, 3)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
