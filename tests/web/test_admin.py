"""Admin endpoints over a real Site: running, unload, profiles, version, auth (SPEC 5.5, 6)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher
from twisted.web.client import ResponseNeverReceived
from webapi_support import Client, FakeRouter, make_app

from llamaswap.config.model import Config, ModelConfig, PeerConfig, ProfileConfig
from llamaswap.errors import ShuttingDown
from llamaswap.process.state import ProcessState

S = ProcessState

CONFIG = Config(
    models={
        "b/m": ModelConfig(
            id="b/m", cmd="srv --port 5801", proxy="http://127.0.0.1:5801", ttl=300.0
        ),
        "a": ModelConfig(
            id="a",
            cmd="srv -m a",
            proxy="http://127.0.0.1:5800",
            aliases=("alias-a",),
            name="Model A",
            description="first",
            ttl=1.5,
        ),
        "c": ModelConfig(id="c"),
        "d": ModelConfig(id="d"),
    },
    aliases={"alias-a": "a"},
    peers={"peer": PeerConfig(id="peer", proxy="http://p", models=("remote",))},
    profiles={
        "work": ProfileConfig(name="work", description="office", pins={"z": "a", "off": ""}),
        "home": ProfileConfig(name="home", pins={"x": "c"}),
    },
)


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """Log events that carry a failure, collected while the test runs."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        """Keep failure events."""
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def client(manual: bool = False, **kw: Any) -> Client:
    """A client over CONFIG with a, b/m running and c stopping."""
    states = {"a": S.READY, "b/m": S.STARTING, "c": S.STOPPING, "d": S.STOPPED}
    return Client(make_app(CONFIG, states, manual=manual, **kw))


def router(c: Client) -> FakeRouter:
    """The fake router of the client's App."""
    r = c.app.router
    assert isinstance(r, FakeRouter)
    return r


def test_running_lists_live_processes_sorted() -> None:
    """/running lists starting/ready/stopping processes with their config, sorted by id."""
    reply = client().call("GET", "/running")
    assert reply.code == 200 and reply.header("content-type") == "application/json"
    assert reply.json() == {
        "running": [
            {
                "model": "a",
                "state": "ready",
                "cmd": "srv -m a",
                "proxy": "http://127.0.0.1:5800",
                "ttl": 1.5,
                "name": "Model A",
                "description": "first",
            },
            {
                "model": "b/m",
                "state": "starting",
                "cmd": "srv --port 5801",
                "proxy": "http://127.0.0.1:5801",
                "ttl": 300,
                "name": "",
                "description": "",
            },
            {
                "model": "c",
                "state": "stopping",
                "cmd": "",
                "proxy": "",
                "ttl": 0,
                "name": "",
                "description": "",
            },
        ]
    }
    assert b'"ttl": 300,' in reply.body


def test_running_empty_is_empty_list() -> None:
    """Nothing running gives ``{"running": []}``, not null."""
    reply = Client(make_app(CONFIG)).call("GET", "/running")
    assert reply.json() == {"running": []}


def test_get_unload_waits_for_the_router() -> None:
    """GET /unload answers ``OK`` only after every model has stopped."""
    c = client(manual=True)
    pending = c.start("GET", "/unload")
    assert not c.answered(pending)
    assert router(c).calls == [(None, None)]
    router(c).pending[0].callback(None)
    reply = c.finish(pending)
    assert (reply.code, reply.body) == (200, b"OK")
    assert reply.header("content-type") == "text/plain; charset=utf-8"


def test_post_unload_all() -> None:
    """POST /api/models/unload unloads everything and answers ``{"msg":"ok"}``."""
    c = client()
    reply = c.call("POST", "/api/models/unload")
    assert (reply.code, reply.json()) == (200, {"msg": "ok"})
    assert router(c).calls == [(None, None)]
    assert all(u.state is S.STOPPED for u in c.app.upstreams.values())


def test_unload_one_by_alias_and_slashed_id() -> None:
    """POST /api/models/unload/<name> resolves aliases and IDs containing ``/``."""
    c = client()
    assert c.call("POST", "/api/models/unload/alias-a").body == b"OK"
    reply = c.call("POST", "/api/models/unload/b/m")
    assert (reply.code, reply.body) == (200, b"OK")
    encoded = c.call("POST", "/api/models/unload/b%2Fm")
    assert encoded.code == 200
    assert router(c).calls == [(("a",), None), (("b/m",), None), (("b/m",), None)]
    assert c.app.upstreams["a"].state is S.STOPPED


def test_unload_one_leading_slash_trimmed_and_stopped_model_ok() -> None:
    """A leading ``/`` in the model part is trimmed; a stopped model unloads fine."""
    c = client()
    reply = c.call("POST", "/api/models/unload//d")
    assert (reply.code, reply.body) == (200, b"OK")
    assert router(c).calls == [(("d",), None)]


def test_unload_one_ignores_profiles() -> None:
    """Profile pins do not apply to the unload endpoint."""
    c = client(active_profile="work")
    reply = c.call("POST", "/api/models/unload/z")
    assert reply.code == 404 and reply.json()["error"]["message"] == "model not found"


def test_unload_one_unknown_and_peer() -> None:
    """Unknown names are ``model not found``; peer models have no local server."""
    c = client()
    unknown = c.call("POST", "/api/models/unload/nope")
    assert unknown.code == 404
    assert unknown.json()["error"] == {
        "message": "model not found",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
    peer = c.call("POST", "/api/models/unload/peer/remote")
    assert peer.json()["error"]["message"] == "no local server found for requested model"
    assert router(c).calls == []


def test_unload_methods() -> None:
    """Unload endpoints refuse other methods with 405 and Allow."""
    c = client()
    get = c.call("GET", "/api/models/unload")
    assert (get.code, get.header("allow"), get.body) == (405, "POST", b"Method Not Allowed\n")
    assert c.call("POST", "/unload").header("allow") == "GET, HEAD"
    assert c.call("GET", "/api/models/unload/a").code == 405
    assert router(c).calls == []


def test_unload_failure_is_an_error_body(failures: list[dict[str, Any]]) -> None:
    """An unexpected unload failure is a 500 JSON error, logged, never a traceback page."""
    c = client()
    router(c).fail_with = RuntimeError("boom")
    reply = c.call("POST", "/api/models/unload")
    assert reply.code == 500
    assert reply.json()["error"]["message"] == "internal error: boom"
    assert len(failures) == 1


def test_unload_llamaswap_error_keeps_its_status() -> None:
    """A LlamaSwapError from the router keeps its own status and message."""
    c = client()
    router(c).fail_with = ShuttingDown("group is shutting down")
    reply = c.call("GET", "/unload", headers={"Accept": "text/plain"})
    assert (reply.code, reply.body) == (503, b"llamaswap: group is shutting down\n")


def test_unload_client_disconnect_writes_nothing(failures: list[dict[str, Any]]) -> None:
    """A client that leaves while the unload runs gets nothing written; nothing is logged."""
    c = client(manual=True)
    pending = c.start("GET", "/unload")
    pending.cancel()
    c.stub.flush()
    assert c.answered(pending)
    pending.addErrback(lambda f: f.trap(ResponseNeverReceived))
    router(c).pending[0].callback(None)
    c.stub.flush()
    assert failures == []


def test_router_raising_synchronously_is_500(failures: list[dict[str, Any]]) -> None:
    """A router whose unload raises instead of failing a Deferred still gets a 500."""
    c = client()

    def explode(*args: Any) -> None:
        """Raise at once."""
        raise ValueError("sync")

    router(c).unload = explode  # type: ignore[method-assign]
    reply = c.call("POST", "/api/models/unload/a")
    assert reply.code == 500 and reply.json()["error"]["message"] == "internal error: sync"


def test_profiles_list() -> None:
    """GET /api/profiles lists profiles sorted, pins sorted, and the active one."""
    reply = client(active_profile="work").call("GET", "/api/profiles")
    assert reply.json() == {
        "active": "work",
        "profiles": [
            {"id": "home", "description": "", "pins": {"x": "c"}},
            {"id": "work", "description": "office", "pins": {"off": "", "z": "a"}},
        ],
    }
    assert client().call("GET", "/api/profiles").json()["active"] is None


def put_active(c: Client, body: bytes) -> Any:
    """PUT /api/profiles/active with a raw body."""
    return c.call(
        "PUT",
        "/api/profiles/active",
        data=body,
        headers={"Content-Type": "application/json"},
    )


def test_profile_select_and_clear() -> None:
    """Selecting a profile activates it; null or "" deactivates; listeners hear changes."""
    c = client()
    heard: list[str | None] = []
    c.app.extras["on_profile_change"] = heard.append
    reply = put_active(c, b'{"name": "home"}')
    assert (reply.code, reply.json()) == (200, {"active": "home"})
    assert c.app.active_profile == "home"
    assert put_active(c, b'{"name": "home"}').json() == {"active": "home"}
    assert put_active(c, b'{"name": ""}').json() == {"active": None}
    assert put_active(c, b'{"name": null}').json() == {"active": None}
    assert c.app.active_profile is None
    assert heard == ["home", None]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{nope", 400, "invalid profile request"),
        (b"[1]", 400, "invalid profile request"),
        (b"\xff\xfe", 400, "invalid profile request"),
        (b"{}", 400, "profile name is required"),
        (b'{"name": 3}', 400, "profile name must be a string or null"),
        (b'{"name": ["home"]}', 400, "profile name must be a string or null"),
        (b'{"name": "gone"}', 404, 'profile "gone" not found'),
        (b"x" * 70000, 400, "invalid profile request"),
    ],
)
def test_profile_select_errors(body: bytes, status: int, message: str) -> None:
    """Every bad selection is a JSON error and leaves the selection unchanged."""
    c = client(active_profile="work")
    reply = put_active(c, body)
    assert (reply.code, reply.json()["error"]["message"]) == (status, message)
    assert c.app.active_profile == "work"


def test_failing_profile_listener_does_not_break_request(failures: list[dict[str, Any]]) -> None:
    """A listener that raises is logged; the change still succeeds."""
    c = client()

    def broken(name: str | None) -> None:
        """Always fail."""
        raise RuntimeError("listener")

    c.app.extras["on_profile_change"] = broken
    assert put_active(c, b'{"name":"work"}').json() == {"active": "work"}
    assert len(failures) == 1


def test_profile_paths_and_methods() -> None:
    """PUT only on /active, GET only on the list; other sub-paths are 404."""
    c = client()
    assert c.call("GET", "/api/profiles/active").header("allow") == "PUT"
    assert c.call("PUT", "/api/profiles").header("allow") == "GET, HEAD"
    assert c.call("GET", "/api/profiles/other").code == 404


def test_version() -> None:
    """/api/version reports version, commit, build date, Python and Twisted versions."""
    import platform

    import twisted
    from llamaswap.buildinfo import build_info

    c = client()
    body = c.call("GET", "/api/version").json()
    assert body == build_info().as_json()
    assert (body["python"], body["twisted"]) == (platform.python_version(), twisted.__version__)


def test_hardware_503_until_detected_and_when_failed() -> None:
    """/api/hardware: 503 while detection runs or after it failed; the snapshot once detected."""
    from llamaswap.observe.hardware import HardwareInfo

    c = client()
    info = c.app.extras["hardware"] = HardwareInfo()
    reply = c.call("GET", "/api/hardware")
    assert reply.code == 503
    assert "has not finished yet" in reply.json()["error"]["message"]
    info.error = "timed out after 10 seconds"
    reply = c.call("GET", "/api/hardware")
    assert reply.code == 503
    assert reply.json()["error"]["message"] == (
        "hardware detection unavailable: timed out after 10 seconds")
    info.snapshot = {"schema_version": 1, "accelerators": []}
    assert c.call("GET", "/api/hardware").json() == info.snapshot


ADMIN_REQUESTS = [
    ("GET", "/v1/models"),
    ("GET", "/models"),
    ("GET", "/running"),
    ("GET", "/unload"),
    ("POST", "/api/models/unload"),
    ("POST", "/api/models/unload/a"),
    ("GET", "/api/profiles"),
    ("PUT", "/api/profiles/active"),
    ("GET", "/api/version"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
def test_mounted_endpoints_refuse_missing_key(method: str, path: str) -> None:
    """Mounted behind an authorizing root, every endpoint refuses a request without a key."""
    config = Config(models=CONFIG.models, aliases=CONFIG.aliases, api_keys=("k1",))
    c = Client(make_app(config, {"a": S.READY}))
    reply = c.call(method, path, data=b'{"name":null}')
    assert reply.code == 401
    assert reply.header("www-authenticate") == 'Basic realm="llamaswap"'
    assert router(c).calls == []
    assert c.app.upstreams["a"].state is S.READY
    ok = c.call(method, path, data=b'{"name":null}', headers={"Authorization": "Bearer k1"})
    assert ok.code == 200
