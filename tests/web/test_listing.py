"""``GET /v1/models`` and ``/models`` over a real Site (SPEC 5.4)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from webapi_support import Client, make_app

from llamaswap.config.model import (
    Capabilities,
    Config,
    ModelConfig,
    PeerConfig,
    ProfileConfig,
    SelectorConfig,
)
from llamaswap.process.state import ProcessState
from llamaswap.web.listing import ListingPlan, list_models
from llamaswap.web.names import resolve_requested

NOW = 1_760_000_000
S = ProcessState
LOADED = {"value": "loaded"}
UNLOADED = {"value": "unloaded"}


def clock() -> Clock:
    """A clock at a fixed Unix time."""
    c = Clock()
    c.advance(NOW + 0.75)
    return c


def base(record_id: str, **fields: Any) -> dict[str, Any]:
    """A record's fixed leading fields followed by ``fields``."""
    return {"id": record_id, "object": "model", "created": NOW, "owned_by": "llama-swap", **fields}


def listing(config: Config, states: dict[str, ProcessState] | None = None, **kw: Any) -> Any:
    """The records ``GET /v1/models`` returns for ``config``."""
    app = make_app(config, states, **kw)
    client = Client(app, clock())
    reply = client.call("GET", "/v1/models")
    assert reply.code == 200
    assert reply.header("content-type") == "application/json"
    # The pre-encoded listing is byte for byte the plain encoding of the records.
    assert reply.body == json.dumps(list_models(app, NOW)).encode() + b"\n"
    body = reply.json()
    assert body["object"] == "list"
    return body["data"]


def test_plain_models_sorted_with_status() -> None:
    """Local models are listed sorted by id, loaded while their process runs."""
    config = Config(
        models={
            "zeta": ModelConfig(id="zeta", name="  Zeta  ", description="last"),
            "Alpha": ModelConfig(id="Alpha"),
            "beta": ModelConfig(id="beta"),
            "hidden": ModelConfig(id="hidden", unlisted=True),
        }
    )
    data = listing(config, {"beta": S.STOPPING, "zeta": S.STARTING, "Alpha": S.STOPPED})
    assert data == [
        base("Alpha", meta={"llamaswap": {"type": "model"}}, status={"value": "unloaded"}),
        base("beta", meta={"llamaswap": {"type": "model"}}, status={"value": "loaded"}),
        base(
            "zeta",
            name="Zeta",
            description="last",
            meta={"llamaswap": {"type": "model"}},
            status={"value": "loaded"},
        ),
    ]


def test_capabilities_and_metadata() -> None:
    """Capabilities render architecture/flags/context; metadata merges under meta.llamaswap."""
    model = ModelConfig(
        id="omni",
        aliases=("o",),
        metadata={"zz": 1, "type": "mine", "capabilities": "dropped", "nested": {"b": 1, "a": 2}},
        capabilities=Capabilities(
            input=("text", "image"), output=("text", "audio"), tools=True, context=8192
        ),
    )
    [rec] = listing(Config(models={"omni": model}, aliases={"o": "omni"}), {"omni": S.READY})
    assert rec == base(
        "omni",
        architecture={
            "input_modalities": ["text", "image"],
            "output_modalities": ["text", "audio"],
            "modality": "text+image->text+audio",
        },
        capabilities={"audio_speech": True, "function_calling": True, "vision": True},
        supported_parameters=["tools", "tool_choice"],
        context_length=8192,
        meta={
            "llamaswap": {
                "aliases": ["o"],
                "nested": {"a": 2, "b": 1},
                "type": "model",
                "zz": 1,
            },
            "n_ctx": 8192,
        },
        status={"value": "loaded"},
    )
    assert list(rec) == [
        "id",
        "object",
        "created",
        "owned_by",
        "architecture",
        "capabilities",
        "supported_parameters",
        "context_length",
        "meta",
        "status",
    ]


def test_capability_flags_each() -> None:
    """Every capability flag appears only when its condition holds."""
    cases = {
        "asr": (Capabilities(input=("audio",), output=("text",)), {"audio_transcriptions": True}),
        "img": (Capabilities(input=("text",), output=("image",)), {"image_generation": True}),
        "i2i": (
            Capabilities(input=("image",), output=("image",)),
            {"image_to_image": True, "vision": True},
        ),
        "rr": (Capabilities(reranker=True), {"reranker": True}),
    }
    config = Config(models={k: ModelConfig(id=k, capabilities=c) for k, (c, _) in cases.items()})
    for rec in listing(config):
        assert rec["capabilities"] == cases[rec["id"]][1]


def test_metadata_values_json_cannot_carry_become_text() -> None:
    """A metadata value like a YAML date is listed as text instead of failing the listing."""
    model = ModelConfig(id="m", metadata={"released": datetime.date(2026, 1, 2), "ok": [True]})
    [rec] = listing(Config(models={"m": model}))
    assert rec["meta"]["llamaswap"] == {"ok": [True], "released": "2026-01-02", "type": "model"}


def test_metadata_capability_keys_kept_without_capabilities() -> None:
    """Without declared capabilities, metadata keys like ``capabilities`` stay."""
    model = ModelConfig(id="m", metadata={"capabilities": ["x"], "context_length": 5})
    [rec] = listing(Config(models={"m": model}))
    assert rec["meta"] == {
        "llamaswap": {"capabilities": ["x"], "context_length": 5, "type": "model"}
    }
    assert "context_length" not in rec and "capabilities" not in rec


def test_alias_records_when_enabled() -> None:
    """includeAliasesInList adds an alias record pointing at its model."""
    config = Config(
        models={
            "m": ModelConfig(id="m", name="M", aliases=("a2", " ", "a1"), metadata={"k": "v"}),
            "u": ModelConfig(id="u", aliases=("ua",), unlisted=True),
        },
        aliases={"a1": "m", "a2": "m", "ua": "u"},
        include_aliases_in_list=True,
    )
    data = listing(config, {"m": S.READY})
    assert [r["id"] for r in data] == ["a1", "a2", "m"]
    assert data[0] == base(
        "a1",
        name="M",
        meta={"llamaswap": {"k": "v", "modelID": "m", "type": "alias"}},
        status={"value": "loaded"},
    )
    assert data[2]["meta"]["llamaswap"]["aliases"] == ["a2", " ", "a1"]


def test_no_alias_records_by_default() -> None:
    """Aliases are not listed unless includeAliasesInList is on."""
    config = Config(models={"m": ModelConfig(id="m", aliases=("a",))}, aliases={"a": "m"})
    assert [r["id"] for r in listing(config)] == ["m"]


def test_peers_selectors_and_pins() -> None:
    """Peers by FQN, selectors with their strategy, and unshadowed active pins."""
    config = Config(
        models={"a": ModelConfig(id="a", aliases=("al",)), "b": ModelConfig(id="b")},
        aliases={"al": "a"},
        peers={"or": PeerConfig(id="or", proxy="http://x", models=("q/1", "q/1", "bare"))},
        selectors={
            "spill": SelectorConfig(
                id="spill",
                strategy="spillover",
                targets=("b", "al"),
                spillover=3,
                name="Spill",
                metadata={"tier": 1},
            ),
            "pinsel": SelectorConfig(id="pinsel", strategy="pin", targets=("b", "a")),
            "secret": SelectorConfig(id="secret", strategy="pin", targets=("a",), unlisted=True),
        },
        profiles={
            "p": ProfileConfig(
                name="p",
                pins={"public": "a", "off": "", "a": "b", "al": "b", "bare": "a", "spill": "a"},
            )
        },
    )
    data = listing(config, {"a": S.STARTING}, active_profile="p")
    assert data == [
        base("a", meta={"llamaswap": {"aliases": ["al"], "type": "model"}}, status=LOADED),
        base("b", meta={"llamaswap": {"type": "model"}}, status=UNLOADED),
        base(
            "or/bare",
            name="or: bare",
            meta={"llamaswap": {"peerID": "or", "type": "peer"}},
            status=UNLOADED,
        ),
        base(
            "or/q/1",
            name="or: q/1",
            meta={"llamaswap": {"peerID": "or", "type": "peer"}},
            status=UNLOADED,
        ),
        base(
            "pinsel",
            meta={"llamaswap": {"strategy": "pin", "targets": ["b", "a"], "type": "selector"}},
            status=UNLOADED,
        ),
        base("public", meta={"llamaswap": {"type": "profile"}}, status=UNLOADED),
        base(
            "spill",
            name="Spill",
            meta={
                "llamaswap": {
                    "spillover": 3,
                    "strategy": "spillover",
                    "targets": ["b", "al"],
                    "tier": 1,
                    "type": "selector",
                }
            },
            status=LOADED,
        ),
    ]


def test_pins_hidden_without_active_profile() -> None:
    """Pin records appear only for the active profile."""
    config = Config(
        models={"a": ModelConfig(id="a")},
        profiles={"p": ProfileConfig(name="p", pins={"public": "a"})},
    )
    assert [r["id"] for r in listing(config)] == ["a"]


def test_pin_selector_loaded_only_by_first_target() -> None:
    """A pin selector is loaded only when its first target is warm."""
    config = Config(
        models={"a": ModelConfig(id="a"), "b": ModelConfig(id="b")},
        selectors={"s": SelectorConfig(id="s", strategy="pin", targets=("a", "b"))},
    )
    [s] = [r for r in listing(config, {"b": S.READY}) if r["id"] == "s"]
    assert s["status"] == UNLOADED
    [s] = [r for r in listing(config, {"a": S.READY}) if r["id"] == "s"]
    assert s["status"] == LOADED


def test_models_alias_path_and_origin_echo() -> None:
    """``/models`` serves the same listing and echoes Origin; none without Origin."""
    config = Config(models={"m": ModelConfig(id="m")})
    client = Client(make_app(config), clock())
    with_origin = client.call("GET", "/models", headers={"Origin": "http://ui.example"})
    assert with_origin.header("access-control-allow-origin") == "http://ui.example"
    assert with_origin.json()["data"][0]["id"] == "m"
    without = client.call("GET", "/v1/models")
    assert without.header("access-control-allow-origin") is None


def test_listing_method_and_subpath_errors() -> None:
    """POST gets 405 with Allow; a sub-path gets Go's 404 text; HEAD has no body."""
    client = Client(make_app(Config()), clock())
    post = client.call("POST", "/v1/models")
    assert (post.code, post.body, post.header("allow")) == (
        405,
        b"Method Not Allowed\n",
        "GET, HEAD",
    )
    sub = client.call("GET", "/v1/models/extra")
    assert (sub.code, sub.body) == (404, b"404 page not found\n")
    head = client.call("HEAD", "/v1/models")
    assert (head.code, head.body) == (200, b"")


def test_empty_listing() -> None:
    """No models: an empty data list."""
    client = Client(make_app(Config()), clock())
    assert client.call("GET", "/v1/models").json() == {"object": "list", "data": []}


def test_listing_follows_app_replacement() -> None:
    """A reloaded App (new config) is listed at once."""
    client = Client(make_app(Config(models={"old": ModelConfig(id="old")})), clock())
    assert [r["id"] for r in client.call("GET", "/v1/models").json()["data"]] == ["old"]
    client.app = make_app(Config(models={"new": ModelConfig(id="new")}))
    assert [r["id"] for r in client.call("GET", "/v1/models").json()["data"]] == ["new"]


def test_status_and_profile_changes_after_the_listing_was_encoded() -> None:
    """Statuses follow the processes and pins the active profile on every request."""
    config = Config(
        models={"a": ModelConfig(id="a"), "b": ModelConfig(id="b", aliases=("bee",))},
        selectors={"s": SelectorConfig(id="s", strategy="warm", targets=("b",))},
        profiles={"p": ProfileConfig(name="p", pins={"public": "a"})},
        include_aliases_in_list=True,
    )
    app = make_app(config)
    client = Client(app, clock())

    def statuses() -> dict[str, str]:
        body = client.call("GET", "/v1/models").body
        assert body == json.dumps(list_models(app, NOW)).encode() + b"\n"
        return {r["id"]: r["status"]["value"] for r in json.loads(body)["data"]}

    assert set(statuses().values()) == {"unloaded"}
    app.upstreams["b"].state = S.READY
    assert statuses() == {"a": "unloaded", "b": "loaded", "bee": "loaded", "s": "loaded"}
    app.active_profile = "p"
    assert "public" in statuses()
    app.active_profile = None
    assert "public" not in statuses()


NAME = st.text(alphabet="ab/ü-.", min_size=1, max_size=5)


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    """Configs whose names do not collide, as validation guarantees."""
    pool = draw(st.lists(NAME, unique=True, min_size=1, max_size=10))
    split = draw(st.integers(1, len(pool)))
    model_ids, alias_pool = pool[:split], pool[split:]
    owners = draw(st.lists(st.sampled_from(model_ids), min_size=len(alias_pool)))
    aliases = dict(zip(alias_pool, owners, strict=False))
    models = {
        m: ModelConfig(
            id=m,
            aliases=tuple(a for a, o in aliases.items() if o == m),
            unlisted=draw(st.booleans()),
        )
        for m in model_ids
    }
    peer_models = draw(st.lists(st.lists(NAME, min_size=1, max_size=3), max_size=3))
    peers = {
        f"P{i}": PeerConfig(id=f"P{i}", proxy="http://p", models=tuple(ms))
        for i, ms in enumerate(peer_models)
    }
    targets = list(models) + list(aliases) + [f"{p}/{m}" for p in peers for m in peers[p].models]
    selectors = {
        f"S{i}": SelectorConfig(
            id=f"S{i}",
            strategy=strategy,
            targets=tuple(draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3))),
        )
        for i, strategy in enumerate(draw(st.lists(st.sampled_from(["pin", "warm"]), max_size=2)))
    }
    return Config(
        models=models,
        aliases=aliases,
        peers=peers,
        selectors=selectors,
        include_aliases_in_list=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(valid_configs())
def test_every_listed_id_is_addressable_and_sorted(config: Config) -> None:
    """Listed ids are unique, sorted byte-wise, and each one resolves to a model."""
    app = make_app(config)
    ids = [r["id"] for r in list_models(app, NOW)["data"]]
    encoded = ListingPlan.build(app).render(app, NOW)
    assert encoded == json.dumps(list_models(app, NOW)).encode() + b"\n"
    assert ids == sorted(ids, key=lambda i: i.encode())
    assert len(ids) == len(set(ids))
    for record_id in ids:
        resolved = resolve_requested(app, record_id)
        assert resolved.error is None and resolved.kind in ("local", "peer")
        resolved.release()
