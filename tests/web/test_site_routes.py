"""The root resource over real sockets: health, redirects, 404/405, CORS, auth, limits."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
import treq
from proxy_fakes import SiteEnv, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol

from llamaswap.config.model import ModelConfig
from llamaswap.web.site import cors_allow_headers, unclean


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """A site with one model m1 in front of a fake upstream."""
    e = SiteEnv({"m1": ModelConfig(id="m1")}, api_keys=("sekrit",), max_request_body_mb=1)
    yield e
    pytest_twisted.blockon(e.close())


AUTH = {"Authorization": "Bearer sekrit"}


@pytest_twisted.inlineCallbacks
def test_health_is_public(env: SiteEnv) -> Generator[Any, Any, None]:
    """/health and /wol-health answer OK as text without a key."""
    for path in ("/health", "/wol-health"):
        resp = yield env.request("GET", path)
        assert resp.code == 200
        assert (yield resp.text()) == "OK"
        assert resp.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]


@pytest_twisted.inlineCallbacks
def test_root_redirects_to_ui(env: SiteEnv) -> Generator[Any, Any, None]:
    """GET / is a 302 to /ui."""
    resp = yield env.request("GET", "/", allow_redirects=False)
    assert resp.code == 302
    assert resp.headers.getRawHeaders("location") == ["/ui"]
    resp = yield env.request("GET", "/ui", allow_redirects=False)
    assert resp.code == 301
    assert resp.headers.getRawHeaders("location") == ["/ui/"]


@pytest_twisted.inlineCallbacks
def test_unknown_path_404_text(env: SiteEnv) -> Generator[Any, Any, None]:
    """Unknown paths give Go's 404 text."""
    resp = yield env.request("GET", "/nope", headers=AUTH)
    assert resp.code == 404
    assert (yield resp.text()) == "404 page not found\n"


@pytest_twisted.inlineCallbacks
def test_wrong_method_405_with_allow(env: SiteEnv) -> Generator[Any, Any, None]:
    """A known path with the wrong method is 405 with an Allow header."""
    resp = yield env.request("GET", "/v1/chat/completions", headers=AUTH)
    assert resp.code == 405
    assert resp.headers.getRawHeaders("allow") == ["POST"]
    resp = yield env.request("DELETE", "/props", headers=AUTH)
    assert resp.headers.getRawHeaders("allow") == ["GET, HEAD"]


@pytest_twisted.inlineCallbacks
def test_options_preflight(env: SiteEnv) -> Generator[Any, Any, None]:
    """Every OPTIONS gets the CORS 204, before auth and routing."""
    resp = yield env.request(
        "OPTIONS",
        "/anything/at/all",
        headers={"Access-Control-Request-Headers": "X-Custom, bad header, Authorization"},
    )
    assert resp.code == 204
    h = resp.headers
    assert h.getRawHeaders("access-control-allow-origin") == ["*"]
    assert h.getRawHeaders("access-control-allow-headers") == ["X-Custom, Authorization"]
    assert h.getRawHeaders("access-control-max-age") == ["86400"]


def test_cors_default_headers() -> None:
    """Without Access-Control-Request-Headers the default list is sent."""
    assert cors_allow_headers(None).startswith(b"Content-Type, Authorization")


def test_unclean_paths() -> None:
    """Dot segments and double slashes are cleaned; clean paths are left alone."""
    assert unclean(b"/v1//models") == b"/v1/models"
    assert unclean(b"/a/./b/../c") == b"/a/c"
    assert unclean(b"/v1/models") is None
    assert unclean(b"/upstream/m/") is None


@pytest_twisted.inlineCallbacks
def test_auth_required_for_inference(env: SiteEnv) -> Generator[Any, Any, None]:
    """Without a key inference is 401 with WWW-Authenticate; with it, it is served."""
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    assert resp.code == 401
    assert resp.headers.getRawHeaders("www-authenticate")
    body = yield resp.json()
    assert body["error"]["code"] == "unauthorized"
    assert env.router.requested == []
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"}, headers=AUTH)
    assert resp.code == 200


@pytest_twisted.inlineCallbacks
def test_admin_mounted_with_auth(env: SiteEnv) -> Generator[Any, Any, None]:
    """Admin resources are mounted by path and protected by the key."""
    resp = yield env.request("GET", "/v1/models")
    assert resp.code == 401
    resp = yield env.request("GET", "/v1/models", headers=AUTH)
    assert resp.code == 200
    body = yield resp.json()
    assert [m["id"] for m in body["data"]] == ["m1"]


@pytest_twisted.inlineCallbacks
def test_declared_oversize_body_413(env: SiteEnv) -> Generator[Any, Any, None]:
    """A Content-Length over maxRequestBodyMB is refused with 413 before reading it."""
    client = RawClient(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer sekrit\r\nContent-Length: 5000000\r\n\r\n{"
    )
    reactor.connectTCP("127.0.0.1", env.port.getHost().port, client.factory())
    data = yield client.lost
    assert data.startswith(b"HTTP/1.1 413")
    assert b"maxRequestBodyMB" in data
    assert env.router.requested == []


@pytest_twisted.inlineCallbacks
def test_chunked_oversize_body_413(env: SiteEnv) -> Generator[Any, Any, None]:
    """A chunked body that grows past the limit is refused too."""
    chunk = b"x" * 600_000
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    client = RawClient(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + piece + piece
    )
    reactor.connectTCP("127.0.0.1", env.port.getHost().port, client.factory())
    data = yield client.lost
    assert data.startswith(b"HTTP/1.1 413")


@pytest_twisted.inlineCallbacks
def test_absurd_headers_are_4xx(env: SiteEnv) -> Generator[Any, Any, None]:
    """A 64 KB header gets a 4xx from twisted.web, not a traceback or a dead server."""
    client = RawClient(
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    )
    reactor.connectTCP("127.0.0.1", env.port.getHost().port, client.factory())
    data = yield client.lost
    assert data.startswith(b"HTTP/1.1 431")
    assert data.endswith(b"too large\n")
    resp = yield env.request("GET", "/health")
    assert resp.code == 200


@pytest_twisted.inlineCallbacks
def test_head_on_get_route(env: SiteEnv) -> Generator[Any, Any, None]:
    """HEAD is answered wherever GET is."""
    resp = yield env.request("HEAD", "/health")
    assert resp.code == 200


class RawClient(Protocol):
    """Sends bytes, collects everything until the server closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.lost: Deferred[bytes] = Deferred()

    def factory(self) -> ClientFactory:
        """A factory that yields this protocol."""
        f = ClientFactory()
        f.buildProtocol = lambda addr: self  # type: ignore[method-assign]
        return f

    def connectionMade(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(self.received)


_ = treq


def test_go_duration() -> None:
    """Access-log durations are printed like Go's time.Duration."""
    from llamaswap.web.site import go_duration

    assert go_duration(1.234567) == "1.234567s"
    assert go_duration(0.0123) == "12.3ms"
    assert go_duration(0.0005321) == "532.1µs"
    assert go_duration(120) == "2m0s"
    assert go_duration(3723.5) == "1h2m3.5s"
    assert go_duration(0) == "0s"


@pytest_twisted.inlineCallbacks
def test_access_log_line(env: SiteEnv) -> Generator[Any, Any, None]:
    """Each request logs one access line with status, size, agent and a duration."""
    from twisted.logger import globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        text = formatEvent(event)
        if text.startswith("Request "):
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    try:
        resp = yield env.request("GET", "/health", headers={"User-Agent": "probe/1"})
        yield resp.content()
        resp = yield env.request("GET", "/wol-health")
        yield resp.content()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(lines) == 1
    assert lines[0].startswith('Request 127.0.0.1 "GET /health HTTP/1.1" 200 2 "probe/1" ')
    assert lines[0].endswith("s")
