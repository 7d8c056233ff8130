"""LlamaSwapChannel: whole request heads parsed in one pass, answered as twisted.web would."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from llamaswap.web import channel as channel_module
from llamaswap.web.channel import FAST_HEADS, LlamaSwapChannel, http_date


class _Echo(Resource):
    """Answers with what the request looked like (method, target, headers, body)."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """The request as JSON."""
        assert request.content is not None
        return json.dumps(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": [
                    [name.decode(), [v.decode("latin-1") for v in values]]
                    for name, values in request.requestHeaders.getAllRawHeaders()
                ],
                "body": request.content.read().decode("latin-1"),
            }
        ).encode()


_CLIENT = IPv4Address("TCP", "127.0.0.1", 1234)


def _connected_echo(transport: StringTransport) -> LlamaSwapChannel:
    """A LlamaSwapChannel of an echoing Site, connected over ``transport``."""
    # No idle timeout: it would fire on the real reactor a minute later, in another test,
    # and fail there (a StringTransport cannot unregister a producer it never had).
    site = Site(_Echo(), timeout=None)
    site.protocol = LlamaSwapChannel  # type: ignore[assignment]
    proto = site.buildProtocol(_CLIENT)
    assert isinstance(proto, LlamaSwapChannel)
    proto.makeConnection(transport)
    return proto


def _exchange(
    chunks: Sequence[bytes], fast: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, int]:
    """Feed ``chunks`` to a fresh channel: what it wrote, and how many heads went fast."""
    monkeypatch.setattr(channel_module, "FAST_HEADS", fast)
    taken = []
    original = LlamaSwapChannel._fast_request

    def counting(self: LlamaSwapChannel, data: bytes, end: int) -> bool:
        handled = original(self, data, end)
        taken.append(handled)
        return handled

    monkeypatch.setattr(LlamaSwapChannel, "_fast_request", counting)
    transport = StringTransport(peerAddress=_CLIENT)
    proto = _connected_echo(transport)
    for chunk in chunks:
        proto.dataReceived(chunk)
    out = re.sub(rb"Date: [^\r]*\r\n", b"", transport.value())
    return out, sum(taken)


def _same_both_ways(chunks: Sequence[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, int]:
    """The answer with the fast parser equals twisted.web's; returns it and the fast count."""
    fast, taken = _exchange(chunks, True, monkeypatch)
    slow, none = _exchange(chunks, False, monkeypatch)
    assert none == 0
    assert fast == slow
    return fast, taken


POST = (
    b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\ncontent-type: application/json\r\n"
    b"X-Multi: one\r\nx-multi: two\r\nContent-Length: 13\r\n\r\n{\"model\":\"m\"}"
)


def test_fast_heads_available_with_installed_twisted() -> None:
    """The Twisted in use has what the one-pass parser needs (else every head goes slow)."""
    assert FAST_HEADS


def test_whole_request_takes_fast_path_and_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A head and body in one read: parsed in one pass, same request as twisted.web builds."""
    out, taken = _same_both_ways([POST], monkeypatch)
    assert taken == 1
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["method"] == "POST" and body["uri"] == "/v1/chat/completions?x=1"
    assert ["X-Multi", ["one", "two"]] in body["headers"]
    assert ["Content-Type", ["application/json"]] in body["headers"]
    assert body["body"] == '{"model":"m"}'


def test_body_in_later_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole head whose body arrives in pieces afterwards."""
    head, body = POST.split(b"\r\n\r\n")
    out, taken = _same_both_ways([head + b"\r\n\r\n{\"mo", b"del\":", b"\"m\"}"], monkeypatch)
    assert taken == 1
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["body"] == body.decode()


def test_pipelined_requests_answered_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests in one read: both answered, first one first."""
    get = b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
    out, taken = _same_both_ways([POST + get], monkeypatch)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"/v1/chat/completions") < out.index(b"/second")
    assert taken == 0  # more than one request in a read: the line parser takes them


def test_pipelined_bodyless_requests_each_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GETs in one read (no body to bound the first) are both answered, in order."""
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
    out, _ = _same_both_ways([first + second], monkeypatch)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"/health") < out.index(b"/second")


def test_stray_bytes_after_a_bodyless_request_wait_for_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes after a whole GET are the start of the next request: answered once complete."""
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    out, _ = _same_both_ways([first + b"GET /sec", b"ond HTTP/1.1\r\n\r\n"], monkeypatch)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert b'"uri": "/second"' in out


def test_three_pipelined_requests_after_a_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST with a body, then two GETs (the last closing): three answers, then close."""
    get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out, _ = _same_both_ways([POST + get + last], monkeypatch)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"/v1/chat/completions") < out.index(b'"/a"') < out.index(b'"/b"')


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",  # obsolete line folding
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Cr: a\rb\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\n\r\n",
    ],
    ids=["folding", "chunked", "bad-name", "nul", "bare-cr", "two-lengths", "bad-length",
         "bad-target", "http10", "leading-crlf"],
)
def test_unusual_heads_answered_as_twisted_does(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the one-pass parser does not take is answered exactly as twisted.web answers it."""
    out, _ = _same_both_ways([raw], monkeypatch)
    assert out.startswith(b"HTTP/1.")


def test_head_split_across_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A head that arrives in two reads goes through twisted.web's line parser."""
    out, taken = _same_both_ways([POST[:20], POST[20:]], monkeypatch)
    assert taken == 0
    assert b"200 OK" in out


def test_expect_continue(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Expect: 100-continue`` still gets its interim answer before the body is read."""
    head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    out, taken = _same_both_ways([head, b"ok"], monkeypatch)
    assert taken == 1
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


class _CountingTransport(StringTransport):
    """A transport that counts how often its local address is asked for."""

    host_calls = 0

    def getHost(self) -> IPv4Address:
        """The local address, counted."""
        self.host_calls += 1
        return IPv4Address("TCP", "127.0.0.1", 8080)


def test_local_address_asked_of_the_transport_once_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request knows the local address; the socket is asked for it only once."""
    transport = _CountingTransport(peerAddress=_CLIENT)
    proto = _connected_echo(transport)
    hosts = []
    original = _Echo.render

    def noting(self: _Echo, request: Request) -> bytes:
        hosts.append(request.getHost())
        return original(self, request)

    monkeypatch.setattr(_Echo, "render", noting)
    proto.dataReceived(POST + POST)
    proto.dataReceived(POST)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 3
    assert hosts == [IPv4Address("TCP", "127.0.0.1", 8080)] * 3
    assert transport.host_calls == 1


def test_http_date_formats_each_second() -> None:
    """The Date value is RFC 9110's format of the given second."""
    assert http_date(0.5) == datetimeToString(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1.0) == b"Thu, 01 Jan 1970 00:00:01 GMT"
