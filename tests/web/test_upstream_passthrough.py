"""/upstream/<model>/<path>: longest-prefix match, redirects, ignorePaths, untouched bodies."""

from __future__ import annotations

from collections.abc import Generator
from types import MappingProxyType
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv

from llamaswap.config.model import Filters, ModelConfig
from llamaswap.process.state import ProcessState


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """Models whose ids contain slashes, one with filters that must not apply here."""
    e = SiteEnv(
        {
            "org": ModelConfig(id="org"),
            "org/model": ModelConfig(
                id="org/model",
                aliases=("om",),
                filters=Filters(set_params=MappingProxyType({"x": 1})),
            ),
        }
    )
    yield e
    pytest_twisted.blockon(e.close())


@pytest_twisted.inlineCallbacks
def test_longest_prefix_and_encoding_kept(env: SiteEnv) -> Generator[Any, Any, None]:
    """The longest model prefix wins; the rest keeps its percent-encoding and query."""
    resp = yield env.request("GET", "/upstream/org/model/api/x%2Fy?q=1")
    assert resp.code == 200
    yield resp.content()
    assert env.router.requested == ["org/model"]
    assert env.stats.requests[-1]["uri"] == "/api/x%2Fy?q=1"


@pytest_twisted.inlineCallbacks
def test_encoded_slash_in_model_name(env: SiteEnv) -> Generator[Any, Any, None]:
    """``org%2Fmodel`` names the same model as ``org/model``."""
    resp = yield env.request("GET", "/upstream/org%2Fmodel/health")
    yield resp.content()
    assert env.router.requested == ["org/model"]
    assert env.stats.requests[-1]["uri"] == "/health"


@pytest_twisted.inlineCallbacks
def test_body_untouched(env: SiteEnv) -> Generator[Any, Any, None]:
    """No filters and no model rewriting: the body arrives byte for byte."""
    raw = b'{"model":"whatever", "y": 2}'
    resp = yield env.request(
        "POST", "/upstream/om/v1/chat/completions/echo", data=raw,
        headers={"Content-Type": "application/json"},
    )
    yield resp.content()
    assert env.stats.requests[-1]["body"] == raw
    assert env.stats.requests[-1]["path"] == "/v1/chat/completions/echo"


@pytest_twisted.inlineCallbacks
def test_redirects_to_trailing_slash(env: SiteEnv) -> Generator[Any, Any, None]:
    """/upstream/<model> redirects to /upstream/<model>/ (301 GET, 308 POST), query kept."""
    resp = yield env.request("GET", "/upstream/org?a=1", allow_redirects=False)
    assert resp.code == 301
    assert resp.headers.getRawHeaders("location") == ["/upstream/org/?a=1"]
    resp = yield env.request("POST", "/upstream/om", data=b"", allow_redirects=False)
    assert resp.code == 308
    assert resp.headers.getRawHeaders("location") == ["/upstream/om/"]
    assert env.router.requested == []


@pytest_twisted.inlineCallbacks
def test_unknown_model_404(env: SiteEnv) -> Generator[Any, Any, None]:
    """A path naming no model is 404 model not found."""
    resp = yield env.request("GET", "/upstream/nope/x")
    assert resp.code == 404
    body = yield resp.json()
    assert body["error"]["message"] == "model not found"


@pytest_twisted.inlineCallbacks
def test_ignore_paths_when_not_ready(env: SiteEnv) -> Generator[Any, Any, None]:
    """ignorePaths requests for a stopped model are 409 and start nothing; ready ones pass."""
    env.router.upstreams["org"].state = ProcessState.STOPPED
    resp = yield env.request("GET", "/upstream/org/favicon.ico")
    assert resp.code == 409
    body = yield resp.json()
    assert "ignorePaths" in body["error"]["message"]
    assert env.router.requested == []
    env.router.upstreams["org"].state = ProcessState.READY
    resp = yield env.request("GET", "/upstream/org/favicon.ico")
    assert resp.code == 200
    yield resp.content()
    assert env.router.requested == ["org"]


@pytest_twisted.inlineCallbacks
def test_peer_passthrough_renames_only_the_path_name() -> Generator[Any, Any, None]:
    """A peer model via /upstream: the body model is renamed only if it equals the path name."""
    from llamaswap.config.model import Config, PeerConfig
    from llamaswap.web.app import App

    e = SiteEnv({"org": ModelConfig(id="org")})
    try:
        peer = PeerConfig(id="remote", proxy=e.up_url, models=("big",), api_key="pk")
        e.app = App(
            config=Config(models=e.app.config.models, peers={"remote": peer}),
            router=e.app.router,
            upstreams=e.app.upstreams,
            proxy_log=None,  # type: ignore[arg-type]
            upstream_log=None,  # type: ignore[arg-type]
        )
        for sent, expected in [("remote/big", "big"), ("other", "other")]:
            resp = yield e.request(
                "POST", "/upstream/remote/big/v1/chat/completions/echo", json={"model": sent}
            )
            yield resp.content()
            up = e.stats.requests[-1]
            assert up["path"] == "/v1/chat/completions/echo"
            assert up["body"] == b'{"model":"%s"}' % expected.encode()
            assert up["headers"]["authorization"] == ["Bearer pk"]
        assert e.router.requested == []
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_comfyui_root_starts_other_paths_wait() -> Generator[Any, Any, None]:
    """/comfyui redirects; only /comfyui/ may start comfyui_auto; it is not observed."""
    e = SiteEnv({"comfyui_auto": ModelConfig(id="comfyui_auto")})
    try:
        resp = yield e.request("GET", "/comfyui?x=1", allow_redirects=False)
        assert resp.code == 301
        assert resp.headers.getRawHeaders("location") == ["/comfyui/?x=1"]
        e.router.upstreams["comfyui_auto"].state = ProcessState.STOPPED
        resp = yield e.request("GET", "/comfyui/api/queue")
        assert resp.code == 409
        body = yield resp.json()
        assert "only /comfyui/ can start it" in body["error"]["message"]
        resp = yield e.request("GET", "/comfyui/")
        assert resp.code == 200
        yield resp.content()
        e.router.upstreams["comfyui_auto"].state = ProcessState.READY
        resp = yield e.request("GET", "/comfyui/api/x%2Fy?q=1")
        yield resp.content()
        assert e.stats.requests[-1]["uri"] == "/api/x%2Fy?q=1"
        assert e.router.requested == ["comfyui_auto", "comfyui_auto"]
        assert e.observer.events == []
    finally:
        yield e.close()


@pytest_twisted.inlineCallbacks
def test_comfyui_without_model_is_404(env: SiteEnv) -> Generator[Any, Any, None]:
    """Without a comfyui_auto model the prefix is a 404 saying so."""
    resp = yield env.request("GET", "/comfyui/")
    assert resp.code == 404
    body = yield resp.json()
    assert body["error"]["message"] == "local model comfyui_auto not found"
