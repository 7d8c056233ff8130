"""Model-dispatched requests end to end: rewriting, grants, errors, observers, peers."""

from __future__ import annotations

import io
import json
from collections.abc import Generator
from types import MappingProxyType
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv

from llamaswap.config.model import Filters, ModelConfig, PeerConfig, Timeouts
from llamaswap.errors import ConcurrencyLimitExceeded, UpstreamStartFailed

MODELS = {
    "m1": ModelConfig(id="m1", aliases=("one",)),
    "m2": ModelConfig(
        id="m2",
        use_model_name="org/real-m2",
        filters=Filters(
            strip_params=("temperature",),
            set_params=MappingProxyType({"top_k": 5, "kw.think": False}),
        ),
    ),
}


@pytest.fixture
def env() -> Generator[SiteEnv, None, None]:
    """Two models in front of one fake upstream."""
    e = SiteEnv(dict(MODELS))
    yield e
    pytest_twisted.blockon(e.close())


def last_upstream(env: SiteEnv) -> dict[str, Any]:
    """The last request the fake upstream received."""
    return env.stats.requests[-1]


@pytest_twisted.inlineCallbacks
def test_alias_forwarded_as_requested(env: SiteEnv) -> Generator[Any, Any, None]:
    """An alias routes to its model; the upstream sees the body exactly as sent."""
    raw = b'{"model": "one",  "messages": []}'
    resp = yield env.request(
        "POST", "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.code == 200
    yield resp.content()
    assert env.router.requested == ["m1"]
    up = last_upstream(env)
    assert up["body"] == raw
    assert up["path"] == "/v1/chat/completions"
    assert env.router.grants[0].done_calls == 1


@pytest_twisted.inlineCallbacks
def test_use_model_name_and_filters(env: SiteEnv) -> Generator[Any, Any, None]:
    """useModelName, stripParams and setParams rewrite the body; Content-Length matches."""
    resp = yield env.request(
        "POST", "/v1/chat/completions", json={"model": "m2", "temperature": 1, "x": 1}
    )
    yield resp.content()
    up = last_upstream(env)
    assert json.loads(up["body"]) == {
        "model": "org/real-m2",
        "x": 1,
        "kw": {"think": False},
        "top_k": 5,
    }
    assert up["headers"]["content-length"] == [str(len(up["body"]))]


@pytest_twisted.inlineCallbacks
def test_v_prefix_stripped(env: SiteEnv) -> Generator[Any, Any, None]:
    """/v/chat/completions reaches the upstream as /chat/completions, query kept."""
    resp = yield env.request("POST", "/v/chat/completions?x=1", json={"model": "m1"})
    yield resp.content()
    assert last_upstream(env)["uri"] == "/chat/completions?x=1"


@pytest_twisted.inlineCallbacks
def test_get_with_query_model(env: SiteEnv) -> Generator[Any, Any, None]:
    """GET /props?model= is dispatched by the query."""
    resp = yield env.request("GET", "/props?model=one")
    assert resp.code == 200
    yield resp.content()
    assert env.router.requested == ["m1"]
    assert last_upstream(env)["uri"] == "/props?model=one"


@pytest_twisted.inlineCallbacks
def test_multipart_use_model_name(env: SiteEnv) -> Generator[Any, Any, None]:
    """A multipart upload is dispatched by its model field, rewritten by useModelName."""
    resp = yield env.request(
        "POST",
        "/v1/audio/transcriptions",
        data={"model": "m2"},
        files={"file": ("a.wav", "audio/wav", io.BytesIO(b"RIFF\x00\x01"))},
    )
    body = yield resp.json()
    assert resp.code == 200
    assert body["text"].startswith("heard org/real-m2")
    assert b"RIFF\x00\x01" in last_upstream(env)["body"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "fragment"),
    [
        (b'{"model": ', b"application/json", 400, "malformed JSON"),
        (b'{"messages": []}', b"application/json", 400, "missing 'model'"),
        (b'{"model": "nope"}', b"application/json", 404, "'nope' not found"),
        (b'{"model": "\xff"}', b"application/json", 400, "UTF-8"),
        (b'{"model": "m1"}', b"text/plain", 415, "application/json"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_request_errors(
    env: SiteEnv, body: bytes, ctype: bytes, status: int, fragment: str
) -> Generator[Any, Any, None]:
    """Bad requests get a clear 4xx JSON envelope and never reach the router."""
    resp = yield env.request(
        "POST", "/v1/chat/completions", data=body, headers={b"Content-Type": ctype}
    )
    assert resp.code == status
    payload = yield resp.json()
    assert fragment in payload["error"]["message"]
    assert env.router.requested == []


@pytest_twisted.inlineCallbacks
def test_router_refusal_statuses(env: SiteEnv) -> Generator[Any, Any, None]:
    """Router errors keep their status, message and headers (429 Retry-After, 502)."""
    env.router.fail_with = ConcurrencyLimitExceeded()
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    assert resp.code == 429
    assert resp.headers.getRawHeaders("retry-after") == ["1"]
    yield resp.content()
    env.router.fail_with = UpstreamStartFailed("m1 exited with code 3: bad flag --foo")
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    body = yield resp.json()
    assert resp.code == 502
    assert "bad flag --foo" in body["error"]["message"]


@pytest_twisted.inlineCallbacks
def test_disconnect_while_waiting_cancels_router(env: SiteEnv) -> Generator[Any, Any, None]:
    """A client leaving while its model loads cancels the Router Deferred."""
    env.router.hold = True
    held = env.router.wait_held()
    d = env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield held
    finished = env.observer.wait_finished()
    d.cancel()
    d.addErrback(lambda _: None)
    rec = yield finished
    assert env.router.cancelled == ["m1"]
    assert rec.error == "client disconnected"


@pytest_twisted.inlineCallbacks
def test_late_grant_is_released(env: SiteEnv) -> Generator[Any, Any, None]:
    """A grant racing the client's departure is released at once, never used."""
    env.router.hold = True
    env.router.grant_on_cancel = True
    held = env.router.wait_held()
    d = env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield held
    finished = env.observer.wait_finished()
    d.cancel()
    d.addErrback(lambda _: None)
    yield finished
    assert [g.done_calls for g in env.router.grants] == [1]
    assert env.stats.requests == []


@pytest_twisted.inlineCallbacks
def test_observers_see_the_whole_request(env: SiteEnv) -> Generator[Any, Any, None]:
    """Observers get started, response, chunks and finished, with the record filled in.

    ``request_finished`` is bookkeeping: it comes after the answer, with no further request.
    """
    finished = env.observer.wait_finished()
    resp = yield env.request(
        "POST",
        "/v1/chat/completions",
        json={"model": "one", "stream": True, "x_chunks": 3},
    )
    yield resp.content()
    yield finished
    events = [name for name, _ in env.observer.events]
    assert events == ["started", "response", "finished"]
    assert env.observer.chunks >= 1
    rec = env.observer.finished[0]
    assert (rec.model_id, rec.requested_name, rec.status) == ("m1", "one", 200)
    assert rec.resp_content_type == "text/event-stream"
    assert rec.bytes_out > 0 and rec.first_byte_at is not None
    assert rec.error is None and rec.finished_at is not None
    assert rec.metadata == {"granted": True}


@pytest_twisted.inlineCallbacks
def test_connect_error_releases_grant(env: SiteEnv) -> Generator[Any, Any, None]:
    """An unreachable upstream is a 502 naming the model, and the grant is released."""
    env.router.upstreams["m1"].proxy_url = "http://127.0.0.1:1"
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    body = yield resp.json()
    assert resp.code == 502
    assert "upstream m1 is unreachable" in body["error"]["message"]
    assert env.router.done_calls == 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/upstream/one/v1/chat/completions"])
@pytest_twisted.inlineCallbacks
def test_process_stopped_after_grant_is_503(
    env: SiteEnv, path: str
) -> Generator[Any, Any, None]:
    """A grant whose process stopped before the forward: 503 not ready, grant released once."""
    env.router.hold = True
    held = env.router.wait_held()
    finished = env.observer.wait_finished()
    d = env.request("POST", path, json={"model": "one"})
    yield held
    _, router_d, _ = env.router.held[0]
    grant = env.router.grant("m1")
    env.router.upstreams["m1"].set_state("stopping")
    router_d.callback(grant)
    resp = yield d
    body = yield resp.json()
    assert resp.code == 503
    assert body["error"] == {
        "message": "[m1] process is not ready",
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }
    rec = yield finished
    assert (rec.status, rec.error) == (503, "[m1] process is not ready")
    assert [g.done_calls for g in env.router.grants] == [1]
    assert len(env.observer.finished) == 1
    assert env.stats.requests == []


@pytest_twisted.inlineCallbacks
def test_pool_closed_when_upstream_stops(env: SiteEnv) -> Generator[Any, Any, None]:
    """When the model leaves READY its idle upstream connections are closed."""
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield resp.content()
    pools = env.site.pools
    [pool] = [p for k, p in pools._fast.items() if k[0] == "m1"]
    [conn] = pool._idle
    env.router.upstreams["m1"].set_state("stopping")
    assert not [k for k in pools._fast if k[0] == "m1"]
    assert not conn.usable


@pytest_twisted.inlineCallbacks
def test_peer_forwarding() -> Generator[Any, Any, None]:
    """Peer models go to the peer with its key, bare model name and the peer's Host."""
    e = SiteEnv(dict(MODELS))
    try:
        peer = PeerConfig(
            id="remote",
            proxy=e.up_url + "/api",
            models=("llama-70b",),
            api_key="peer-key",
            filters=Filters(set_params=MappingProxyType({"p": 1})),
            timeouts=Timeouts(response_header=5),
        )
        e.app = type(e.app)(
            config=type(e.app.config)(models=e.app.config.models, peers={"remote": peer}),
            router=e.app.router,
            upstreams=e.app.upstreams,
            proxy_log=None,  # type: ignore[arg-type]
            upstream_log=None,  # type: ignore[arg-type]
        )
        resp = yield e.request(
            "POST",
            "/v1/chat/completions",
            json={"model": "remote/llama-70b"},
            headers={"Authorization": "Bearer client", "X-Forwarded-For": "1.2.3.4"},
        )
        yield resp.content()
        up = last_upstream(e)
        assert up["path"] == "/api/v1/chat/completions"
        assert json.loads(up["body"]) == {"model": "llama-70b", "p": 1}
        assert up["headers"]["authorization"] == ["Bearer peer-key"]
        assert up["headers"]["x-api-key"] == ["peer-key"]
        assert up["headers"]["host"] == [e.up_url.removeprefix("http://")]
        assert "x-forwarded-for" not in up["headers"]
        assert e.router.requested == []
    finally:
        yield e.close()


class _Started:
    """Observer that hands out each record as soon as its response starts."""

    def __init__(self) -> None:
        self.waiting: list[Any] = []

    def request_started(self, rec: Any) -> None:
        """Nothing to do."""

    def response_started(self, rec: Any) -> None:
        """Give the record to whoever waits."""
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(rec)

    def response_chunk(self, rec: Any, data: bytes) -> None:
        """Nothing to do."""

    def request_finished(self, rec: Any) -> None:
        """Nothing to do."""


@pytest_twisted.inlineCallbacks
def test_record_cancel_aborts_stream(env: SiteEnv) -> Generator[Any, Any, None]:
    """rec.cancel() (the in-flight cancel API) ends a stream and frees the upstream."""
    from twisted.internet.defer import Deferred

    started = _Started()
    env.app.observers.append(started)
    got: Deferred[Any] = Deferred()
    started.waiting.append(got)
    d = env.request(
        "POST",
        "/v1/chat/completions",
        json={"model": "m1", "stream": True, "x_chunks": 1000, "x_interval_ms": 20},
    )
    rec = yield got
    abandoned = env.stats.wait_abandoned()
    finished = env.observer.wait_finished()
    assert rec.cancel is not None
    rec.cancel()
    yield abandoned
    done = yield finished
    assert done.error == "client disconnected"
    assert env.router.done_calls == 1
    failed = []
    try:
        resp = yield d
        yield resp.content()
    except Exception as e:  # the connection was aborted, before or during the body
        failed.append(e)
    assert failed, "the client must not see a clean end"


@pytest_twisted.inlineCallbacks
def test_record_cancel_while_queued(env: SiteEnv) -> Generator[Any, Any, None]:
    """Cancelling a request still waiting for its model withdraws it from the router."""
    env.router.hold = True
    held = env.router.wait_held()
    d = env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    d.addErrback(lambda _: None)
    yield held
    finished = env.observer.wait_finished()
    rec = env.observer.started[-1]
    assert rec.cancel is not None
    rec.cancel()
    done = yield finished
    assert done is rec
    assert done.error == "client disconnected"
    assert env.router.cancelled == ["m1"]


@pytest_twisted.inlineCallbacks
def test_refusals_are_observed(env: SiteEnv) -> Generator[Any, Any, None]:
    """Unknown models and router refusals still produce one finished record with a status."""
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "nope"})
    yield resp.content()
    env.router.fail_with = ConcurrencyLimitExceeded()
    resp = yield env.request("POST", "/v1/chat/completions", json={"model": "m1"})
    yield resp.content()
    unknown, limited = env.observer.finished
    assert (unknown.model_id, unknown.status) == ("nope", 404)
    assert "nope" in (unknown.error or "")
    assert (limited.model_id, limited.status) == ("m1", 429)


@pytest_twisted.inlineCallbacks
def test_accept_encoding_reduced_when_recorded(env: SiteEnv) -> Generator[Any, Any, None]:
    """With observers, only gzip/deflate are asked of the upstream (so usage can be parsed)."""
    resp = yield env.request(
        "POST", "/v1/chat/completions", json={"model": "m1"},
        headers={"Accept-Encoding": "br, gzip;q=0.8, zstd"},
    )
    yield resp.content()
    [sent] = last_upstream(env)["headers"]["accept-encoding"]
    assert "gzip;q=0.8" in sent
    assert "br" not in sent and "zstd" not in sent
