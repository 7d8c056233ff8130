"""A raw-socket HTTP/1.1 client for tests of what a well-behaved client would never send.

It runs in a thread (``deferToThread``) when the service shares the test's reactor: the
sockets here block, with a timeout, and must never run on the reactor thread.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

CRLF = b"\r\n"


@dataclass
class RawResponse:
    """One parsed response: status, headers (lower-cased names) and the decoded body."""

    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""


class Timeout(Exception):
    """The server sent nothing for the whole timeout."""


class _Reader:
    """Reads an HTTP/1.1 response stream from a socket, one response at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def more(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError as e:
            raise Timeout("no bytes from the server in time") from e
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            raise EOFError("connection closed")
        self.buffer += data

    def line(self) -> bytes:
        while CRLF not in self.buffer:
            self.more()
        line, self.buffer = self.buffer.split(CRLF, 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.more()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def rest(self) -> bytes:
        try:
            while True:
                self.more()
        except EOFError:
            pass
        out, self.buffer = self.buffer, b""
        return out

    def response(self, method: bytes = b"GET") -> RawResponse:
        status_line = self.line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not a status line: {status_line!r}")
        out = RawResponse(int(parts[1]))
        while True:
            line = self.line()
            if not line:
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            value = value.strip()
            out.headers[key] = out.headers[key] + b", " + value if key in out.headers else value
        if method == b"HEAD" or out.status in (204, 304) or 100 <= out.status < 200:
            return out
        if out.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = []
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line():
                        pass
                    break
                body.append(self.exactly(size))
                self.exactly(2)
            out.body = b"".join(body)
        elif b"content-length" in out.headers:
            out.body = self.exactly(int(out.headers[b"content-length"]))
        else:
            out.body = self.rest()
        return out


def exchange(
    port: int,
    data: bytes,
    responses: int,
    methods: list[bytes] | None = None,
    timeout: float = 10.0,
) -> tuple[list[RawResponse], bool]:
    """Send ``data`` in one write, read up to ``responses`` answers.

    Returns the answers read and whether the server then closed the connection (checked
    only after all answers came, with a short wait).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reader = _Reader(sock)
        got: list[RawResponse] = []
        for i in range(responses):
            method = methods[i] if methods else b"GET"
            got.append(reader.response(method))
        sock.settimeout(0.5)
        try:
            reader.more()
        except (EOFError, Timeout):
            pass
        return got, reader.closed


def send_and_close(port: int, data: bytes, read_bytes: int = 0, timeout: float = 10.0) -> bytes:
    """Send ``data``, read at least ``read_bytes`` of the answer (if any), then close at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        while len(got) < read_bytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return got


def post(path: bytes, body: bytes, *, close: bool = False, extra: bytes = b"") -> bytes:
    """A POST with a Content-Length body."""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def get(path: bytes, *, close: bool = False) -> bytes:
    """A bodyless GET."""
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + (
        b"Connection: close\r\n" if close else b""
    ) + b"\r\n"


def chunked_post(path: bytes, pieces: list[bytes]) -> bytes:
    """A POST whose body is sent with chunked transfer coding."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body
    )


class _BufferReader(_Reader):
    """A reader over bytes already received."""

    def __init__(self, data: bytes) -> None:
        self.buffer = data
        self.closed = False

    def more(self) -> None:
        self.closed = True
        raise EOFError("no more bytes")


def read_responses(data: bytes) -> list[RawResponse]:
    """Every whole response at the start of ``data`` (parsing stops at the first it cannot)."""
    reader = _BufferReader(data)
    out: list[RawResponse] = []
    while reader.buffer:
        try:
            out.append(reader.response())
        except (EOFError, ValueError):
            break
    return out
