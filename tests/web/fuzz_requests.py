"""A seeded generator of malformed and unusual HTTP/1.1 requests, for the fuzz test.

Each case is the bytes one client connection sends. A case is ``complete`` when the server
owes it an answer (or a close) without waiting for more bytes; an incomplete one (a body
shorter than its Content-Length, a head cut short) may legitimately wait for the client.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MODELS = ("alpha", "beta")
PATHS = (
    b"/v1/chat/completions", b"/v1/chat/completions", b"/v1/chat/completions",
    b"/v1/completions", b"/v1/embeddings", b"/v1/messages", b"/v1/responses",
    b"/v1/models", b"/running", b"/health", b"/api/version", b"/api/profiles",
    b"/upstream/alpha/health", b"/upstream/alpha/v1/models", b"/v1/audio/transcriptions",
    b"/props?model=alpha", b"/nope", b"/ui/", b"/metrics",
)
METHODS = (b"GET", b"POST", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH",
           b"BREW", b"G\xc3\xa9T", b"", b"POST POST")
VERSIONS = (b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1",
            b"HTTP/1", b"", b"HTTP/1.1\x00")


@dataclass
class Case:
    """One connection's bytes and whether they end on a request boundary."""

    kind: str
    data: bytes
    complete: bool


def _body(rng: random.Random) -> bytes:
    """A request body: valid, odd or broken JSON, or not JSON at all."""
    model = rng.choice(MODELS)
    choice = rng.randrange(12)
    if choice == 0:
        depth = rng.choice((50, 500, 999, 1000, 5000, 20000))
        return (b'{"model":"' + model.encode() + b'","messages":[],"x":'
                + b"[" * depth + b"]" * depth + b"}")
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if choice == 2:
        return b'{"model": "' + model.encode() + b'", "messages": [' + b"1," * rng.randrange(50)
    if choice == 3:
        value = rng.choice(([model], 123, None, {"a": 1}, "", "x" * 3000, "\ud800",
                            "../../etc/passwd", "alpha\r\nX: y"))
        return json.dumps({"model": value, "messages": []}).encode()
    if choice == 4:
        return b'{"model":"' + model.encode() + b'","n":1' + b"9" * rng.randrange(1, 5000) + b"}"
    if choice == 5:
        return json.dumps([{"model": model}]).encode()
    if choice == 6:
        content = "\u00e9\u4e2d\U0001f600"
        return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]},
                          ensure_ascii=False).encode("utf-8")
    if choice == 7:
        return b'{"model":"' + model.encode() + b'","messages":[]}' + b" trailing"
    if choice == 8:
        return b""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "stream": rng.random() < 0.3, "max_tokens": rng.randrange(-5, 50)}).encode()


def _headers(rng: random.Random, body_len: int | None) -> list[bytes]:
    """Header lines, some of them broken, plus framing for ``body_len`` when given."""
    lines = [b"Host: fuzz"] if rng.random() < 0.9 else []
    for _ in range(rng.randrange(4)):
        lines.append(rng.choice((
            b"Content-Type: application/json",
            b"Content-Type: multipart/form-data; boundary=xyz",
            b"Content-Type: text/plain; charset=\xff",
            b"Authorization: Bearer " + bytes(rng.randrange(33, 127) for _ in range(20)),
            b"X-Weird: \xff\xfe\x00ok",
            b"Bad Header: spaces in name",
            b"NoColonHere",
            b" folded: continuation",
            b"X-Long: " + b"a" * rng.choice((100, 8000, 20000)),
            b"Accept-Encoding: gzip, br, zstd",
            b"Connection: upgrade",
            b"Upgrade: websocket",
            b"Expect: 100-continue",
            b"Connection: close",
            b"X-Forwarded-For: 1.2.3.4",
        )))
    if body_len is not None:
        framing = rng.randrange(8)
        if framing == 0:
            lines.append(b"Content-Length: %d" % (body_len + rng.choice((-5, -1, 1, 10))))
        elif framing == 1:
            lines.append(b"Content-Length: " + rng.choice((b"-1", b"abc", b"1e3", b" 5", b"")))
        elif framing == 2:
            lines += [b"Content-Length: %d" % body_len] * 2
        elif framing == 3:
            lines += [b"Content-Length: %d" % body_len, b"Transfer-Encoding: chunked"]
        else:
            lines.append(b"Content-Length: %d" % body_len)
    return lines


def _request_line(rng: random.Random) -> bytes:
    """A request line, sometimes malformed or in an unusual form."""
    method = rng.choice(METHODS) if rng.random() < 0.3 else b"POST"
    path = rng.choice(PATHS)
    form = rng.randrange(10)
    if form == 0:
        path = b"http://127.0.0.1:1" + path
    elif form == 1:
        path = rng.choice((b"*", b"", b"//v1//chat/../completions", b"/%00", b"/%zz",
                           b"/" + b"a" * 9000, b"/\xff\xfe", b"/v1/chat/completions#frag"))
    version = rng.choice(VERSIONS) if rng.random() < 0.2 else b"HTTP/1.1"
    return b" ".join(p for p in (method, path, version) if p is not None)


def _plain(rng: random.Random) -> Case:
    body = _body(rng)
    head = [_request_line(rng), *_headers(rng, len(body))]
    return Case("plain", b"\r\n".join(head) + b"\r\n\r\n" + body, True)


def _chunked(rng: random.Random) -> Case:
    body = _body(rng)
    cut = rng.randrange(len(body) + 1)
    pieces = [body[:cut], body[cut:]]
    style = rng.randrange(6)
    if style == 0:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    elif style == 1:
        framed = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    elif style == 2:
        framed = b"%x;ext=1\r\n%s\r\n0\r\nTrailer: x\r\n\r\n" % (len(body), body)
    elif style == 3:
        framed = b"%x\r\n%sXX0\r\n\r\n" % (len(body), body)
    elif style == 4:
        framed = b"ffffffffffffffffff\r\n" + body
    else:
        framed = b"%x\r\n%s\r\n" % (len(body) + 3, body) + b"0\r\n\r\n"
    head = [b"POST /v1/chat/completions HTTP/1.1", b"Host: fuzz",
            b"Content-Type: application/json", b"Transfer-Encoding: chunked"]
    return Case("chunked", b"\r\n".join(head) + b"\r\n\r\n" + framed, style in (0, 1, 2, 3))


def _truncated(rng: random.Random) -> Case:
    whole = _valid(rng).data
    return Case("truncated", whole[: rng.randrange(1, len(whole))], False)


def _garbage(rng: random.Random) -> Case:
    data = rng.choice((
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
        b"\r\n" * rng.randrange(1, 50) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\n\n",
        b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 600 + b"\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ))
    return Case("garbage", data, True)


def _valid(rng: random.Random) -> Case:
    body = json.dumps({"model": rng.choice(MODELS), "stream": rng.random() < 0.5,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: fuzz\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return Case("valid", data, True)


def _pipelined(rng: random.Random) -> Case:
    parts = [rng.choice((_valid, _plain, _plain, _garbage))(rng)
             for _ in range(rng.randrange(2, 5))]
    return Case("pipelined", b"".join(p.data for p in parts), all(p.complete for p in parts))


MAKERS: tuple[Callable[[random.Random], Case], ...] = (
    _plain, _plain, _plain, _chunked, _truncated, _garbage, _valid, _pipelined, _pipelined,
)


def cases(seed: int, count: int) -> Iterator[Case]:
    """``count`` cases from ``seed``: the same seed always gives the same cases."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.choice(MAKERS)(rng)
