"""Admin endpoints over real TCP sockets with a real HTTP client (treq)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site
from webapi_support import FakeRouter, MiniRoot, make_app

from llamaswap.config.model import Config, ModelConfig
from llamaswap.process.state import ProcessState
from llamaswap.web.admin import build_admin_resources
from llamaswap.web.app import App

reactor: Any = global_reactor

CONFIG = Config(
    models={"m": ModelConfig(id="m", cmd="srv", proxy="http://127.0.0.1:1")},
    api_keys=("sk-test",),
)
AUTH = {"Authorization": "Bearer sk-test"}


class Server:
    """A real Site on a free port serving the admin resources behind an authorizing root."""

    def __init__(self, app: App) -> None:
        """Listen on 127.0.0.1, port 0."""
        self.app = app
        root = MiniRoot(lambda: self.app, build_admin_resources(lambda: self.app, reactor))
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    def get(self, path: str, **kw: Any) -> Deferred[Any]:
        """GET ``path``."""
        return treq.get(self.base + path, pool=self.pool, **kw)

    async def close(self) -> None:
        """Close the pool and the listening port."""
        await self.pool.closeCachedConnections()
        await self.port.stopListening()


async def with_server(test: Callable[[Server], Awaitable[None]]) -> None:
    """Run ``test`` against a fresh server (m ready, manual router); always clean up."""
    srv = Server(make_app(CONFIG, {"m": ProcessState.READY}, manual=True))
    try:
        await test(srv)
    finally:
        await srv.close()


@pytest_twisted.ensureDeferred
async def test_listing_needs_key_over_tcp() -> None:
    """Without the key: 401; with it: the listing with m loaded."""

    async def check(server: Server) -> None:
        refused = await server.get("/v1/models")
        assert refused.code == 401
        await refused.content()
        ok = await server.get("/v1/models", headers=AUTH)
        body = await ok.json()
        assert [(r["id"], r["status"]["value"]) for r in body["data"]] == [("m", "loaded")]

    await with_server(check)


@pytest_twisted.ensureDeferred
async def test_unload_survives_client_disconnect_over_tcp() -> None:
    """A client that hangs up during /unload leaves the server healthy and answering."""

    async def check(server: Server) -> None:
        router = server.app.router
        assert isinstance(router, FakeRouter)
        waiting = server.get("/unload", headers=AUTH)
        while not router.pending:
            await deferLater(reactor, 0.01, lambda: None)
        waiting.cancel()
        try:
            await waiting
        except Exception as exc:  # the cancelled request fails on the client side
            assert "Cancelled" in repr(exc) or "ResponseNeverReceived" in repr(exc)
        await deferLater(reactor, 0.05, lambda: None)
        router.pending[0].callback(None)
        after = await server.get("/running", headers=AUTH)
        assert after.code == 200
        assert (await after.json())["running"][0]["model"] == "m"

    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        """Keep events that carry a failure."""
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        await with_server(check)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_unload_answers_when_router_finishes_over_tcp() -> None:
    """GET /unload answers OK once the router's unload completes."""

    async def check(server: Server) -> None:
        router = server.app.router
        assert isinstance(router, FakeRouter)
        waiting = ensureDeferred(_text(server, "/unload"))
        while not router.pending:
            await deferLater(reactor, 0.01, lambda: None)
        assert not waiting.called
        router.pending[0].callback(None)
        assert await waiting == (200, "OK")

    await with_server(check)


async def _text(server: Server, path: str) -> tuple[int, str]:
    """GET ``path`` with the key; status and text body."""
    response = await server.get(path, headers=AUTH)
    return response.code, await response.text()
