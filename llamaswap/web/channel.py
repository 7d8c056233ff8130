"""The HTTP/1.1 server channel: twisted.web's, with the request head parsed in one pass.

twisted.web's ``HTTPChannel`` is a ``LineReceiver``: it splits the head into lines and
runs a method per line, a header-object call per header, and a state check per call.
For a small proxied request that is a third of the proxy's own time between the
request's arrival and its bytes leaving for the model. ``LlamaSwapChannel`` parses a head
that arrived whole (the common case: one ``recv`` holds it) with a few bytes methods,
fills the same ``Request`` twisted.web would have built, and hands it on through the
channel's own ``allHeadersReceived`` / body / ``allContentReceived`` steps, so
persistence, ``Expect: 100-continue``, body limits, pipelining and producers behave
exactly as before.

Anything unusual goes to twisted.web's line parser unchanged, which answers it as it
always has: a head split across reads, obsolete line folding, ``Transfer-Encoding``,
a repeated or malformed ``Content-Length``, a bad request line or header name, too
many or too large headers, a leading empty line, a non-persistent connection, and bytes
beyond the request (pipelined requests: the line parser holds each one until the request
before it has finished).

The parser needs a few of twisted.web's internals (the channel's request-state fields,
its identity body decoder, its request-line and header-name validators). They are
looked up once at import; when a Twisted release lacks one, ``FAST_HEADS`` is False and
every request takes the line parser (a test fails so that the change is noticed).
"""

from __future__ import annotations

from typing import Any

from twisted.web import http, http_headers
from twisted.web.server import version as _server_version

_parse_request_line: Any = getattr(http, "_parseRequestLine", None)
_identity_decoder: Any = getattr(http, "_IdentityTransferDecoder", None)
_name_encoder: Any = getattr(http_headers, "_nameEncoder", None)
FAST_HEADS = all(
    (
        _parse_request_line is not None,
        _identity_decoder is not None,
        _name_encoder is not None and hasattr(_name_encoder, "encode"),
        hasattr(http.HTTPChannel, "_finishRequestBody"),
        hasattr(http.HTTPChannel, "_HTTPChannel__first_line"),
        "_rawHeaders" in getattr(http.Headers, "__slots__", ()),
    )
)

_SERVER = b"Server"
_DATE = b"Date"
_last_date: tuple[int, bytes] = (-1, b"")


def http_date(now: float) -> bytes:
    """``now`` as an HTTP date (RFC 9110 5.6.7), formatted once per second."""
    global _last_date
    second = int(now)
    if _last_date[0] != second:
        _last_date = (second, http.datetimeToString(second))
    return _last_date[1]


def set_default_headers(headers: http.Headers, date: bytes) -> None:
    """``Server`` and ``Date`` on a fresh response, as twisted.web's ``process`` sets them."""
    if FAST_HEADS:
        raw = headers._rawHeaders
        raw[_SERVER] = [_server_version]
        raw[_DATE] = [date]
    else:
        headers.setRawHeaders(_SERVER, [_server_version])
        headers.setRawHeaders(_DATE, [date])


_CONTENT_LENGTH = b"Content-Length"
_TRANSFER_ENCODING = b"Transfer-Encoding"


class LlamaSwapChannel(http.HTTPChannel):
    """The HTTP/1.x channel: whole heads parsed in one pass; 431 for an over-long header line."""

    _host_address: Any = None

    def getHost(self) -> Any:
        """The connection's local address, asked of the socket once.

        twisted.web's ``Request`` asks for it as it is built, and a TCP transport answers
        with a ``getsockname`` system call each time; a connected socket's local address
        does not change.
        """
        host = self._host_address
        if host is None:
            host = self._host_address = super().getHost()
        return host

    def lineLengthExceeded(self, line: bytes) -> None:
        """Tell the client why, then close."""
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
                b"Content-Length: 36\r\n\r\nllamaswap: request header too large\n"
            )
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Parse a whole head at once when possible, else as twisted.web does."""
        if (
            FAST_HEADS
            and self.line_mode
            and not self._buffer
            and not self._busyReceiving
            and not self._handlingRequest
            and self._HTTPChannel__first_line == 1
            and self.persistent
        ):
            end = data.find(b"\r\n\r\n")
            if 0 < end < self.totalHeadersSize and self._fast_request(data, end):
                return
        super().dataReceived(data)

    def _fast_request(self, data: bytes, end: int) -> bool:
        """Handle one request whose head is ``data[:end]``; False to fall back untouched."""
        lines = data[:end].split(b"\r\n")
        if len(lines) > self.maxHeaders:
            return False
        try:
            command, target, version = _parse_request_line(lines[0])
        except ValueError:
            return False
        raw: dict[bytes, list[bytes]] = {}
        encode = _name_encoder.encode
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or line[0] in b" \t":
                return False
            try:
                name = encode(name)
            except ValueError:
                return False
            value = value.strip(b" \t")
            if b"\x00" in value or b"\r" in value or b"\n" in value:
                return False
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        if _TRANSFER_ENCODING in raw:
            return False
        lengths = raw.get(_CONTENT_LENGTH)
        length = 0
        if lengths is not None:
            if len(lengths) != 1 or not lengths[0].isdigit():
                return False
            length = int(lengths[0])
        rest = data[end + 4 :]
        if len(rest) > length:
            # More than this request: pipelined requests are parsed by the line parser,
            # which holds them until the request before them has finished.
            return False

        self.resetTimeout()
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders._rawHeaders = raw
        self._HTTPChannel__first_line = 0
        self._command, self._path, self._version = command, target, version
        if lengths is not None:
            self.length = length
            self._transferDecoder = _identity_decoder(
                length, request.handleContentChunk, self._finishRequestBody
            )
        self._busyReceiving = True
        try:
            self.allHeadersReceived()
            if self.length == 0:
                self.allContentReceived()
            else:
                self.setRawMode()
            transport: Any = self.transport
            if rest and not (transport is None or transport.disconnecting):
                self.rawDataReceived(rest)
        finally:
            self._busyReceiving = False
        if self._buffer:
            # Bytes handed back while this request was handled (the next pipelined
            # request, once this one finished): parse them as LineReceiver would.
            super().dataReceived(b"")
        return True


__all__ = ["FAST_HEADS", "LlamaSwapChannel", "http_date", "set_default_headers"]
