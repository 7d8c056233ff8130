"""HTTP_PROXY/HTTPS_PROXY/NO_PROXY on the real request path (SPEC 3.5), over real sockets.

Upstreams are named ``*.test``: only the recording forward proxy resolves those names, so
a request that reaches them went through it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from types import MappingProxyType
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import FakeUpstream, SiteEnv, UpstreamStats, listen, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.web.server import Site

from llamaswap.config.model import ModelConfig, PeerConfig, Timeouts
from llamaswap.proxyenv import ProxySettings
from llamaswap.testing import rawclient
from llamaswap.testing.forwardproxy import ForwardProxy
from llamaswap.testing.responder import Responder
from llamaswap.testing.tlscert import SelfSignedCert, self_signed
from llamaswap.testing.wsecho import EchoServer
from llamaswap.web.pools import UpstreamPools

AUTH = "Basic dXNlcjpzM2NyZXQ="  # user:s3cret


class RawClient(rawclient.RawClient):
    """A raw client whose waits time out (a broken proxy must not hang a test)."""

    def wait_for(self, marker: bytes) -> Deferred[None]:
        """Fires once ``marker`` has been received; fails after 15 s."""
        return within(super().wait_for(marker))


def within(d: Deferred[Any], seconds: float = 15) -> Deferred[Any]:
    """``d``, failing with TimeoutError after ``seconds`` (a broken proxy must not hang)."""
    return d.addTimeout(seconds, reactor)


def raw_connect(port: int, request: bytes) -> RawClient:
    """Connect a RawClient to 127.0.0.1:``port``."""
    client = RawClient(request)
    factory = ClientFactory()
    factory.buildProtocol = lambda addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", port, factory)
    return client


def chat(path: bytes, body: dict[str, Any]) -> bytes:
    """A raw HTTP/1.1 POST with a JSON body."""
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: client.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(data), data))


class World:
    """Responder (plain and TLS), a fake upstream, a WebSocket echo and the recording proxy."""

    def __init__(self, cert: SelfSignedCert) -> None:
        self.cert = cert
        self.cleanup: list[Callable[[], Any]] = []
        self.responder = self._listen(Site(Responder(reactor, "resp", 0)))
        self.tls_responder = self._listen(Site(Responder(reactor, "peer", 0)), tls=True)
        self.fake_stats = UpstreamStats()
        port, self.fake = listen(FakeUpstream(stats=self.fake_stats))
        self.cleanup.append(port.stopListening)
        self.ws_heads: list[bytes] = []
        self.ws = self._listen(Factory.forProtocol(lambda: EchoServer(self.ws_heads)))
        self.proxy = ForwardProxy(
            reactor,
            hosts={"resp.test": ("127.0.0.1", self.responder),
                   "peer.test": ("127.0.0.1", self.tls_responder),
                   "fake.test": ("127.0.0.1", self.fake),
                   "ws.test": ("127.0.0.1", self.ws)},
            credentials=("user", "s3cret"),
        )
        self.proxy_port = self._listen(self.proxy.factory())
        self.tls_proxy_port = self._listen(self.proxy.factory(), tls=True)
        self.cleanup.insert(0, self.proxy.close)
        self.proxy_url = f"http://user:s3cret@127.0.0.1:{self.proxy_port}"
        self.site: SiteEnv | None = None

    def _listen(self, factory: Any, tls: bool = False) -> int:
        if tls:
            port = reactor.listenSSL(0, factory, self.cert.server_options(),
                                     interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.cleanup.append(port.stopListening)
        return int(port.getHost().port)

    def serve(self, env: dict[str, str], models: dict[str, str],
              peers: dict[str, str] | None = None) -> SiteEnv:
        """The real Site for ``models`` (id -> proxy URL) and peers, proxies read from ``env``."""
        pools = UpstreamPools(reactor, proxies=ProxySettings.from_environ(env),
                              tls_policy=self.cert.client_policy())
        peer_configs = {
            pid: PeerConfig(id=pid, proxy=url, models=("llama",),
                            timeouts=Timeouts(response_header=10))
            for pid, url in (peers or {}).items()
        }
        self.site = SiteEnv(
            {mid: ModelConfig(id=mid, proxy=url) for mid, url in models.items()},
            pools=pools,
            peers=MappingProxyType(peer_configs),
        )
        return self.site

    async def close(self) -> None:
        """Stop the site, then the proxy and every listener."""
        if self.site is not None:
            await self.site.close()
        for stop in self.cleanup:
            await stop()


@pytest.fixture(scope="module")
def cert() -> SelfSignedCert:
    """One self-signed certificate for peer.test and 127.0.0.1 (made once per module)."""
    return self_signed(["peer.test"], ["127.0.0.1"])


@pytest_twisted.async_yield_fixture
async def world(cert: SelfSignedCert) -> AsyncIterator[World]:
    """Upstreams and the proxy, all on real ports; everything stopped after."""
    w = World(cert)
    yield w
    await w.close()


def post(site: SiteEnv, path: str, **kwargs: Any) -> Deferred[Any]:
    """POST to the site, giving up after 15 s."""
    return site.request("POST", path, timeout=15, **kwargs)


async def body_of(resp: Any) -> bytes:
    """The whole response body (within 15 s)."""
    return bytes(await within(resp.content()))


@pytest_twisted.ensureDeferred
async def test_http_upstream_streams_through_the_proxy(world: World) -> None:
    """A streamed chat reaches a proxied http upstream in absolute form, with credentials."""
    site = world.serve({"HTTP_PROXY": world.proxy_url},
                       {"m": f"http://resp.test:{world.responder}"})
    resp = await post(site, "/v1/chat/completions",
                              json={"model": "m", "stream": True, "x_chunks": 4})
    assert resp.code == 200
    assert resp.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    body = await body_of(resp)
    assert body.count(b"data: {") >= 4 and body.rstrip().endswith(b"data: [DONE]")
    [seen] = world.proxy.seen
    assert (seen.method, seen.target) == (
        "POST", f"http://resp.test:{world.responder}/v1/chat/completions")
    assert seen.headers["proxy-authorization"] == AUTH


@pytest_twisted.ensureDeferred
async def test_proxy_connection_is_pooled_and_upstream_sees_origin_form(world: World) -> None:
    """Requests reuse one pooled proxy connection; the upstream sees the usual request."""
    site = world.serve({"http_proxy": world.proxy_url}, {"f": f"http://fake.test:{world.fake}"})
    for _ in range(3):
        resp = await post(site, "/v1/chat/completions", json={"model": "f"})
        assert resp.code == 200
        assert json.loads(await body_of(resp))["choices"][0]["message"]["content"] == "hello"
    assert [s.connection for s in world.proxy.seen] == [1, 1, 1]
    assert world.proxy.connections == 1
    got = world.fake_stats.requests
    assert [r["uri"] for r in got] == ["/v1/chat/completions"] * 3
    assert "proxy-authorization" not in got[0]["headers"]
    assert got[0]["headers"]["host"] == [site.url.removeprefix("http://")]


@pytest_twisted.ensureDeferred
async def test_https_peer_through_a_connect_tunnel(world: World) -> None:
    """An https peer is reached by CONNECT + TLS inside; the tunnel is pooled."""
    site = world.serve({"HTTPS_PROXY": world.proxy_url}, {},
                       peers={"remote": f"https://peer.test:{world.tls_responder}"})
    resp = await post(site, "/v1/chat/completions",
                              json={"model": "remote/llama", "stream": True, "x_chunks": 3})
    assert resp.code == 200
    assert (await body_of(resp)).rstrip().endswith(b"data: [DONE]")
    resp = await post(site, "/v1/embeddings", json={"model": "remote/llama"})
    assert resp.code == 200
    assert json.loads(await body_of(resp))["data"][0]["embedding"]
    [seen] = world.proxy.seen
    assert (seen.method, seen.target) == ("CONNECT", f"peer.test:{world.tls_responder}")
    assert seen.headers["proxy-authorization"] == AUTH


@pytest_twisted.ensureDeferred
async def test_no_proxy_entries_bypass_the_proxy(world: World) -> None:
    """NO_PROXY ip:port goes direct; the same IP on another port still uses the proxy."""
    site = world.serve(
        {"HTTP_PROXY": world.proxy_url, "NO_PROXY": f"example.com, 0.0.0.0:{world.fake}"},
        {"direct": f"http://0.0.0.0:{world.fake}", "via": f"http://0.0.0.0:{world.responder}"},
    )
    resp = await post(site, "/v1/chat/completions", json={"model": "direct"})
    assert resp.code == 200
    await body_of(resp)
    assert world.proxy.seen == [] and len(world.fake_stats.requests) == 1
    resp = await post(site, "/v1/chat/completions", json={"model": "via"})
    assert resp.code == 200
    await body_of(resp)
    assert [s.target for s in world.proxy.seen] == [
        f"http://0.0.0.0:{world.responder}/v1/chat/completions"]


@pytest_twisted.ensureDeferred
async def test_loopback_is_never_proxied(world: World) -> None:
    """127.0.0.1 and localhost upstreams go direct even with both proxies set."""
    site = world.serve(
        {"HTTP_PROXY": world.proxy_url, "HTTPS_PROXY": world.proxy_url},
        {"ip": f"http://127.0.0.1:{world.fake}", "name": f"http://localhost:{world.fake}"},
    )
    for model in ("ip", "name"):
        resp = await post(site, "/v1/chat/completions", json={"model": model})
        assert resp.code == 200
        await body_of(resp)
    assert world.proxy.connections == 0
    assert len(world.fake_stats.requests) == 2


@pytest_twisted.ensureDeferred
async def test_unreachable_proxy_is_a_502_naming_it(world: World) -> None:
    """Nobody listening on the proxy port: 502 JSON naming the proxy and the reason."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    closed = port.getHost().port
    await port.stopListening()
    site = world.serve({"HTTP_PROXY": f"http://user:s3cret@127.0.0.1:{closed}"},
                       {"m": f"http://resp.test:{world.responder}"})
    resp = await post(site, "/v1/chat/completions", json={"model": "m"})
    assert resp.code == 502
    error = json.loads(await body_of(resp))["error"]
    assert error["type"] == "server_error"
    assert f"proxy http://127.0.0.1:{closed} (HTTP_PROXY)" in error["message"]
    assert "refused" in error["message"].lower()
    assert "s3cret" not in error["message"]


@pytest_twisted.ensureDeferred
async def test_refused_tunnel_is_a_502_with_the_proxy_status(world: World) -> None:
    """A proxy answering CONNECT with 403 gives a 502 JSON error quoting that status."""
    world.proxy.refuse_connect = 403
    site = world.serve({"HTTPS_PROXY": world.proxy_url}, {},
                       peers={"remote": f"https://peer.test:{world.tls_responder}"})
    resp = await post(site, "/v1/chat/completions", json={"model": "remote/llama"})
    assert resp.code == 502
    message = json.loads(await body_of(resp))["error"]["message"]
    assert f"proxy http://127.0.0.1:{world.proxy_port} (HTTPS_PROXY)" in message
    assert f"refused CONNECT to peer.test:{world.tls_responder}: 403" in message


@pytest_twisted.ensureDeferred
async def test_client_disconnect_reaches_the_upstream_through_the_proxy(world: World) -> None:
    """A client leaving mid-stream closes the proxied upstream stream too."""
    site = world.serve({"HTTP_PROXY": world.proxy_url}, {"f": f"http://fake.test:{world.fake}"})
    client = raw_connect(site.port.getHost().port, chat(
        b"/v1/chat/completions",
        {"model": "f", "stream": True, "x_chunks": 10000, "x_interval_ms": 5}))
    await client.wait_for(b"tok1 ")
    abandoned = world.fake_stats.wait_abandoned()
    client.transport.loseConnection()  # type: ignore[union-attr]
    await within(abandoned)
    assert world.fake_stats.completed == 0


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_the_upstream_through_the_proxy(world: World) -> None:
    """Backpressure crosses the proxy: a client that stops reading pauses the upstream."""
    site = world.serve({"HTTP_PROXY": world.proxy_url}, {"f": f"http://fake.test:{world.fake}"})
    client = raw_connect(site.port.getHost().port, chat(b"/upstream/f/big", {"model": "f"}))
    await client.wait_for(b"\r\n\r\n")
    client.transport.pauseProducing()  # type: ignore[union-attr]
    written = await within(world.fake_stats.wait_paused())
    assert written < 64 * 1024 * 1024
    assert not world.fake_stats.big_finished
    client.transport.abortConnection()  # type: ignore[union-attr]
    await within(client.lost)


@pytest_twisted.ensureDeferred
async def test_websocket_upgrade_through_the_proxy(world: World) -> None:
    """An upgrade to a proxied http upstream goes in absolute form; frames flow both ways."""
    site = world.serve({"HTTP_PROXY": world.proxy_url}, {"ws": f"http://ws.test:{world.ws}"})
    client = raw_connect(site.port.getHost().port, (
        b"GET /upstream/ws/socket?x=1 HTTP/1.1\r\nHost: client.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    await client.wait_for(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101 Switching Protocols")
    client.transport.write(b"hello")  # type: ignore[union-attr]
    await client.wait_for(b"echo:hello")
    [seen] = world.proxy.seen
    assert (seen.method, seen.target) == ("GET", f"http://ws.test:{world.ws}/socket?x=1")
    assert seen.headers["proxy-authorization"] == AUTH
    assert world.ws_heads[0].startswith(b"GET /socket?x=1 HTTP/1.1")
    client.transport.loseConnection()  # type: ignore[union-attr]
    await within(client.lost)


@pytest_twisted.ensureDeferred
async def test_http_proxy_answers_are_relayed(world: World) -> None:
    """For http upstreams the proxy's own refusal (407) reaches the client as is, as in Go."""
    site = world.serve({"HTTP_PROXY": f"http://user:wrong@127.0.0.1:{world.proxy_port}"},
                       {"m": f"http://resp.test:{world.responder}"})
    resp = await post(site, "/v1/chat/completions", json={"model": "m"})
    assert resp.code == 407
    await body_of(resp)
    assert world.proxy.seen[0].headers["proxy-authorization"] == "Basic dXNlcjp3cm9uZw=="


@pytest_twisted.ensureDeferred
async def test_https_proxy_is_spoken_to_over_tls(world: World) -> None:
    """An https:// proxy gets TLS: plain requests inside it, and TLS inside TLS for peers."""
    url = f"https://user:s3cret@127.0.0.1:{world.tls_proxy_port}"
    site = world.serve({"HTTP_PROXY": url, "HTTPS_PROXY": url},
                       {"m": f"http://resp.test:{world.responder}"},
                       peers={"remote": f"https://peer.test:{world.tls_responder}"})
    for model in ("m", "remote/llama"):
        resp = await post(site, "/v1/chat/completions", json={"model": model})
        assert resp.code == 200
        assert json.loads(await body_of(resp))["choices"]
    assert [(s.method, s.target) for s in world.proxy.seen] == [
        ("POST", f"http://resp.test:{world.responder}/v1/chat/completions"),
        ("CONNECT", f"peer.test:{world.tls_responder}"),
    ]
