"""One persistent connection pool (and Agent) per upstream, closed when it stops serving."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IAgent, IPolicyForHTTPS

from llamaswap.config.model import Timeouts
from llamaswap.httpclient import GO_DEFAULT_KEEPALIVE, QuietHTTPConnectionPool
from llamaswap.process.state import ProcessState
from llamaswap.proxyenv import DIRECT, ProxySettings
from llamaswap.proxyroute import RouteCache, build_agent
from llamaswap.web.fastclient import FastPool

log = Logger()

MAX_PERSISTENT_PER_HOST = 32
# A year: Twisted's pool needs a number; idleConn 0 means no limit, as in Go.
NO_IDLE_LIMIT = 365 * 24 * 3600


class UpstreamPools:
    """Agents keyed by upstream name, each with its own HTTPConnectionPool.

    ``proxies`` (read from the environment at startup) decides, once per upstream
    address, whether connections go direct or through an HTTP proxy (SPEC 3.5);
    ``tls_policy`` verifies https upstreams (browser-like by default).
    """

    def __init__(
        self,
        reactor: Any,
        max_per_host: int = MAX_PERSISTENT_PER_HOST,
        *,
        proxies: ProxySettings = DIRECT,
        tls_policy: IPolicyForHTTPS | None = None,
    ) -> None:
        self._reactor = reactor
        self._max_per_host = max_per_host
        self.proxies = proxies
        self._tls_policy = tls_policy
        self._routes: dict[Timeouts, RouteCache] = {}
        self._pools: dict[str, HTTPConnectionPool] = {}
        self._agents: dict[tuple[str, Timeouts], IAgent] = {}
        self._watched: dict[str, tuple[object, Callable[[], None]]] = {}
        self._fast: dict[tuple[str, str, int], FastPool] = {}

    def fast_pool_for(
        self, key: str, url: bytes, timeouts: Timeouts | float = 0, upstream: Any = None
    ) -> FastPool:
        """The lean-client pool for ``key`` and the host/port of a plain-http ``url``.

        ``timeouts``: the model's or peer's ``timeouts`` (a number: just the connect timeout).
        """
        if upstream is not None:
            self._watch(key, upstream)
        host, port = _host_port(url)
        pool = self._fast.get((key, host, port))
        if pool is None:
            limits = as_timeouts(timeouts)
            route = self.routes(limits).route("http", host, port)
            pool = FastPool(
                self._reactor, host, port, limits.connect, self._max_per_host,
                endpoint=route.endpoint, target_prefix=route.target_prefix,
                proxy_headers=route.proxy_headers, idle_timeout=limits.idle_conn,
            )
            self._fast[(key, host, port)] = pool
        return pool

    def routes(self, timeouts: Timeouts | float = 0) -> RouteCache:
        """The routes (direct or via a proxy) for connections with these timeouts."""
        limits = as_timeouts(timeouts)
        cache = self._routes.get(limits)
        if cache is None:
            cache = self._routes[limits] = RouteCache(
                self._reactor, self.proxies, limits.connect, self._tls_policy,
                keepalive=limits.keepalive or GO_DEFAULT_KEEPALIVE,
                tls_handshake=limits.tls_handshake,
            )
        return cache

    def agent_for(self, key: str, timeouts: Timeouts | float = 0, upstream: Any = None) -> IAgent:
        """The Agent for ``key``; when ``upstream`` is given its pool closes as it leaves READY."""
        if upstream is not None:
            self._watch(key, upstream)
        limits = as_timeouts(timeouts)
        agent = self._agents.get((key, limits))
        if agent is None:
            pool = self._pools.get(key)
            if pool is None:
                pool = QuietHTTPConnectionPool(self._reactor, persistent=True)
                pool.maxPersistentPerHost = self._max_per_host
                pool.retryAutomatically = False
                self._pools[key] = pool
            # idleConn: idle connections close after this long (0: kept until the upstream goes)
            pool.cachedConnectionTimeout = int(limits.idle_conn) or NO_IDLE_LIMIT
            agent = build_agent(self._reactor, self.routes(limits), pool)
            self._agents[(key, limits)] = agent
        return agent

    def connection_pool(self, key: str) -> HTTPConnectionPool | None:
        """The Agent connection pool of ``key``, if one is open."""
        return self._pools.get(key)

    def _watch(self, key: str, upstream: Any) -> None:
        known = self._watched.get(key)
        if known is not None and known[0] is upstream:
            return
        if known is not None:
            known[1]()

        def changed(model_id: str, old: ProcessState, new: ProcessState) -> None:
            if new != ProcessState.READY:
                self.close(key)

        self._watched[key] = (upstream, upstream.add_state_listener(changed))

    def close(self, key: str) -> Deferred[None]:
        """Drop the idle connections of ``key`` (the next request opens new ones)."""
        for fast_key in [k for k in self._fast if k[0] == key]:
            self._fast.pop(fast_key).close()
        pool = self._pools.pop(key, None)
        for agent_key in [k for k in self._agents if k[0] == key]:
            del self._agents[agent_key]
        if pool is None:
            return succeed(None)
        return pool.closeCachedConnections()

    def close_all(self) -> Deferred[Any]:
        """Close every pool and stop watching upstreams (service shutdown)."""
        for _, unsubscribe in self._watched.values():
            try:
                unsubscribe()
            except Exception:
                log.failure("state listener removal failed")
        self._watched.clear()
        keys = set(self._pools) | {k[0] for k in self._fast}
        return DeferredList([self.close(key) for key in keys])


def as_timeouts(timeouts: Timeouts | float) -> Timeouts:
    """``timeouts`` itself, or llama-swap's defaults with this connect timeout."""
    if isinstance(timeouts, Timeouts):
        return timeouts
    return _defaults(float(timeouts))


@functools.lru_cache(maxsize=64)
def _defaults(connect: float) -> Timeouts:
    return Timeouts(connect=connect)


@functools.lru_cache(maxsize=256)
def _address(netloc: bytes) -> tuple[str, int]:
    parts = urlsplit("http://" + netloc.decode("latin-1"))
    return parts.hostname or "127.0.0.1", parts.port or 80


def _host_port(url: bytes) -> tuple[str, int]:
    """Host and port of a plain-http URL (parsed once per distinct address)."""
    slash = url.find(b"/", 7)
    return _address(url[7:] if slash < 0 else url[7:slash])
