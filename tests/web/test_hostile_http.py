"""Unusual and hostile HTTP against the real service over raw sockets (issue 21's reproductions)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from hostile_support import port_of, running_service, start_watching_log, stop_watching_log
from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory

from llamaswap.service import LlamaSwapService
from llamaswap.testing.rawclient import RawClient

CONFIG = """
healthCheckTimeout: 15
startPort: {start_port}
clientTimeouts: {{requestHeader: 1, requestBody: 1, minBodyRate: 1000}}
models:
  a:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model a
"""


@pytest_twisted.async_yield_fixture
async def service(tmp_path: Path) -> AsyncIterator[LlamaSwapService]:
    """The whole service with one responder model on a free port; stopped afterwards."""
    async with running_service(tmp_path, CONFIG) as svc:
        yield svc


async def exchange(svc: LlamaSwapService, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything received until the server closes."""
    client = RawClient(data)
    factory = ClientFactory()
    factory.buildProtocol = lambda addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", port_of(svc), factory)
    return await client.lost


def split_answer(raw: bytes) -> tuple[bytes, bytes]:
    """The status line and the body of one answer (Content-Length framed)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def post(path: bytes, body: bytes) -> bytes:
    """A POST of a JSON ``body`` that asks the server to close afterwards."""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


@pytest.fixture
def failures() -> Iterator[list[str]]:
    """Every logged failure, traceback or critical event, while the test runs."""
    trouble = start_watching_log()
    yield trouble.events
    stop_watching_log(trouble)


@pytest_twisted.ensureDeferred
async def test_deeply_nested_json_is_a_400(
    service: LlamaSwapService, failures: list[str]
) -> None:
    """Nesting deeper than any Python parses: a 400 with an OpenAI error body, no traceback."""
    body = b'{"model":"a","messages":[],"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    raw = await exchange(service, post(b"/v1/chat/completions", body))
    status, payload = split_answer(raw)
    assert status == b"HTTP/1.1 400 Bad Request"
    error = json.loads(payload)["error"]
    assert "nested too deeply" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_deeply_nested_profile_request_is_a_400(service: LlamaSwapService) -> None:
    """The admin endpoint that reads a JSON body refuses a too-deep one as a bad request."""
    body = b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    request = post(b"/api/profiles/active", body).replace(b"POST", b"PUT", 1)
    status, payload = split_answer(await exchange(service, request))
    assert status == b"HTTP/1.1 400 Bad Request"
    assert "invalid profile request" in payload.decode()


@pytest_twisted.ensureDeferred
async def test_moderately_nested_json_is_forwarded(service: LlamaSwapService) -> None:
    """Nesting well inside the parser's reach still reaches the model."""
    body = b'{"model":"a","messages":[{"role":"user","content":"hi"}],"x":' + (
        b"[" * 50 + b"]" * 50 + b"}"
    )
    status, payload = split_answer(await exchange(service, post(b"/v1/chat/completions", body)))
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(payload)["model"] == "a"


@pytest_twisted.ensureDeferred
async def test_absolute_form_target_is_served_as_its_path(service: LlamaSwapService) -> None:
    """``GET http://host:port/health`` answers like ``GET /health``: no redirect."""
    port = port_of(service)
    target = b"http://127.0.0.1:%d/health" % port
    raw = await exchange(
        service, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, body = split_answer(raw)
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"OK"
    assert b"location:" not in raw.lower()


@pytest_twisted.ensureDeferred
async def test_absolute_form_chat_reaches_the_model(service: LlamaSwapService) -> None:
    """An absolute-form POST with a query is routed by its path to the model."""
    body = b'{"model":"a","messages":[{"role":"user","content":"hi"}]}'
    request = post(b"HTTP://localhost/v1/chat/completions?x=1", body)
    status, payload = split_answer(await exchange(service, request))
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(payload)["model"] == "a"


@pytest_twisted.ensureDeferred
async def test_absolute_form_keeps_cleaning_redirects_intact(service: LlamaSwapService) -> None:
    """A dot-segment path in absolute form redirects to the cleaned path, not a mangled URL."""
    raw = await exchange(
        service, b"GET http://h/./health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, _ = split_answer(raw)
    assert status == b"HTTP/1.1 301 Moved Permanently"
    assert b"\r\nLocation: /health\r\n" in raw


@pytest_twisted.ensureDeferred
async def test_unfinished_head_gets_a_408_and_is_closed(service: LlamaSwapService) -> None:
    """A head that never ends is answered 408 once requestHeader has passed, then closed."""
    raw = await exchange(service, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaa")
    status, payload = split_answer(raw)
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert "clientTimeouts.requestHeader (1s)" in json.loads(payload)["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_stalled_body_gets_a_408_and_is_closed(service: LlamaSwapService) -> None:
    """A body that stops arriving is answered 408 naming minBodyRate, then closed."""
    head = post(b"/v1/chat/completions", b"x" * 100)[:-90]
    status, payload = split_answer(await exchange(service, head))
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert "clientTimeouts.minBodyRate (1000 bytes/s" in json.loads(payload)["error"]["message"]
