"""The web UI's static files over real sockets: public, cached by ETag, gzipped, deep links."""

from __future__ import annotations

import gzip
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
import treq
from proxy_fakes import SiteEnv, reactor
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from llamaswap.config.model import ModelConfig
from llamaswap.web.ui import StaticFile, UIResource, load_files


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """A site with API keys configured (the UI's files stay public)."""
    e = SiteEnv({"m1": ModelConfig(id="m1")}, api_keys=("sekrit",))
    yield e
    pytest_twisted.blockon(e.close())


def test_shipped_files_are_small_and_complete() -> None:
    """The package holds the app's entry points and stays under 300 KB before gzip."""
    files = load_files()
    for name in ("index.html", "app.js", "style.css", "favicon.ico", "favicon.svg"):
        assert name in files
    assert sum(len(f.body) for f in files.values()) < 300 * 1024


def test_file_names_of_paths() -> None:
    """Deep links map to index.html; files by name; nested or foreign paths to nothing."""
    name = UIResource.file_name
    assert name("/ui/") == "index.html"
    assert name("/ui/models") == "index.html"
    assert name("/ui/logs/chat-a") == "index.html"
    assert name("/ui/app.js") == "app.js"
    assert name("/ui/x/app.js") is None
    assert name("/favicon.ico") == "favicon.ico"
    assert name("/other") is None


def test_small_or_incompressible_files_are_not_gzipped() -> None:
    """gzip is kept only where it saves bytes."""
    assert StaticFile.of("a.js", b"x").gzipped is None
    assert StaticFile.of("a.js", b"abc" * 1000).gzipped is not None
    assert StaticFile.of("a.css", b"x").content_type == "text/css; charset=utf-8"


@pytest_twisted.inlineCallbacks
def test_index_and_deep_links_are_public(env: SiteEnv) -> Generator[Any, Any, None]:
    """/ui/ and /ui/models answer the app without a key, with a CSP and no-cache."""
    index = load_files()["index.html"].body
    for path in ("/ui/", "/ui/models", "/ui/logs"):
        resp = yield env.request("GET", path)
        assert resp.code == 200
        assert (yield resp.content()) == index
        assert resp.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
        assert resp.headers.getRawHeaders("cache-control") == ["no-cache"]
        assert "script-src 'self'" in resp.headers.getRawHeaders("content-security-policy")[0]
    resp = yield env.request("GET", "/running")
    assert resp.code == 401


def raw_get(env: SiteEnv, path: str, **headers: str) -> Any:
    """GET with a bare Agent: treq's client asks for gzip itself and unpacks it."""
    agent = Agent(reactor, pool=env.pool)
    sent = Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in headers.items()})
    return agent.request(b"GET", (env.url + path).encode(), sent)


@pytest_twisted.inlineCallbacks
def test_etag_revalidation_and_gzip(env: SiteEnv) -> Generator[Any, Any, None]:
    """A matching If-None-Match is a 304; Accept-Encoding gzip gets the gzip copy."""
    resp = yield raw_get(env, "/ui/app.js")
    body = yield treq.content(resp)
    assert resp.headers.getRawHeaders(b"content-encoding") is None
    etag = resp.headers.getRawHeaders(b"etag")[0].decode()
    assert resp.headers.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    again = yield raw_get(env, "/ui/app.js", if_none_match=etag)
    assert again.code == 304
    assert (yield treq.content(again)) == b""
    packed = yield raw_get(env, "/ui/app.js", accept_encoding="gzip, deflate")
    assert packed.headers.getRawHeaders(b"content-encoding") == [b"gzip"]
    assert packed.headers.getRawHeaders(b"vary") == [b"Accept-Encoding"]
    assert packed.headers.getRawHeaders(b"etag")[0].decode() != etag
    assert gzip.decompress((yield treq.content(packed))) == body
    refused = yield raw_get(env, "/ui/app.js", accept_encoding="gzip;q=0")
    assert refused.headers.getRawHeaders(b"content-encoding") is None
    yield treq.content(refused)


@pytest_twisted.inlineCallbacks
def test_missing_files_methods_and_favicon(env: SiteEnv) -> Generator[Any, Any, None]:
    """Unknown files are 404, POST is 405, /favicon.ico is served without a key."""
    resp = yield env.request("GET", "/ui/nope.js")
    assert resp.code == 404
    resp = yield env.request("POST", "/ui/app.js")
    assert resp.code == 405
    assert resp.headers.getRawHeaders("allow") == ["GET, HEAD"]
    resp = yield env.request("GET", "/favicon.ico")
    assert resp.code == 200
    assert resp.headers.getRawHeaders("content-type") == ["image/x-icon"]
    assert (yield resp.content()).startswith(b"\x00\x00\x01\x00")
    resp = yield env.request("HEAD", "/ui/")
    assert resp.code == 200
