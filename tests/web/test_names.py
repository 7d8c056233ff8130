"""Requested-name resolution: pins, selectors, local names, peers (SPEC 5.2, 5.7, 8)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from webapi_support import make_app

from llamaswap.config.model import (
    Config,
    ModelConfig,
    PeerConfig,
    ProfileConfig,
    SelectorConfig,
)
from llamaswap.process.state import ProcessState
from llamaswap.web.names import (
    name_index,
    resolve_local,
    resolve_requested,
    resolve_upstream_path,
)

CONFIG = Config(
    models={
        "m1": ModelConfig(id="m1", aliases=("gpt-4o", "one")),
        "m2": ModelConfig(id="m2"),
        "org/big": ModelConfig(id="org/big", aliases=("big",)),
        "shared": ModelConfig(id="shared"),
    },
    aliases={"gpt-4o": "m1", "one": "m1", "big": "org/big"},
    peers={
        "or": PeerConfig(id="or", proxy="http://or", models=("llama/3", "qwen", "shared", "qwen")),
        "other": PeerConfig(id="other", proxy="http://o", models=("dup", "or/qwen2")),
        "third": PeerConfig(id="third", proxy="http://t", models=("dup",)),
    },
    profiles={
        "work": ProfileConfig(
            name="work",
            pins={"public": "m2", "m1": "or/qwen", "off": "", "fast": "sel", "ghost": "nowhere"},
        ),
    },
    selectors={
        "sel": SelectorConfig(id="sel", strategy="warm", targets=("m2", "one")),
        "pinned": SelectorConfig(id="pinned", strategy="pin", targets=("or/qwen", "m2")),
    },
)


def test_local_model_id() -> None:
    """A model ID resolves to itself, unchanged."""
    resolved = resolve_requested(make_app(CONFIG), "m2")
    assert (resolved.kind, resolved.model_id, resolved.requested) == ("local", "m2", "m2")
    assert not resolved.rewritten and resolved.error is None


def test_alias_keeps_requested_name() -> None:
    """An alias resolves to its model ID; the request keeps the alias."""
    resolved = resolve_requested(make_app(CONFIG), "gpt-4o")
    assert (resolved.kind, resolved.model_id, resolved.requested) == ("local", "m1", "gpt-4o")
    assert not resolved.rewritten


def test_alias_only_on_model_config() -> None:
    """Aliases listed only on the ModelConfig are still found."""
    config = Config(models={"a": ModelConfig(id="a", aliases=("x",))})
    assert resolve_requested(make_app(config), "x").model_id == "a"


def test_peer_fqn() -> None:
    """``<peer>/<model>`` resolves to that peer; model IDs with slashes still work."""
    resolved = resolve_requested(make_app(CONFIG), "or/llama/3")
    assert resolved.kind == "peer"
    assert (resolved.peer_id, resolved.peer_model, resolved.model_id) == (
        "or",
        "llama/3",
        "or/llama/3",
    )
    assert resolved.peer_fqn == "or/llama/3"
    assert resolve_requested(make_app(CONFIG), "org/big").kind == "local"


def test_unique_bare_peer_name() -> None:
    """A bare name only one peer lists resolves to that peer."""
    resolved = resolve_requested(make_app(CONFIG), "qwen")
    assert (resolved.kind, resolved.peer_id, resolved.peer_model) == ("peer", "or", "qwen")


def test_bare_name_listed_by_two_peers_is_unknown() -> None:
    """A bare name two peers list is ambiguous, hence unknown."""
    resolved = resolve_requested(make_app(CONFIG), "dup")
    assert resolved.kind == "unknown"
    assert resolved.error is not None and resolved.error.status == 404
    assert resolved.error.message == "no router for requested model"


def test_bare_name_that_is_a_peer_fqn_is_not_bare() -> None:
    """``or/qwen2`` is bare on peer other but is no FQN of or; ``or/qwen`` is an FQN."""
    resolved = resolve_requested(make_app(CONFIG), "or/qwen2")
    assert (resolved.kind, resolved.peer_id, resolved.peer_model) == ("peer", "other", "or/qwen2")
    assert resolve_requested(make_app(CONFIG), "or/qwen").peer_id == "or"


def test_local_wins_over_bare_peer_name() -> None:
    """A local model ID shadows a peer's bare name."""
    assert resolve_requested(make_app(CONFIG), "shared").kind == "local"


def test_unknown_name() -> None:
    """An unknown name is a 404 naming no router."""
    resolved = resolve_requested(make_app(CONFIG), "nope")
    assert (resolved.kind, resolved.model_id) == ("unknown", "nope")
    assert resolved.error is not None and resolved.error.status == 404


def test_empty_name_is_no_model() -> None:
    """An empty name is the 404 ``no model id could be identified``."""
    resolved = resolve_requested(make_app(CONFIG), "")
    assert resolved.error is not None
    assert resolved.error.message == "no model id could be identified"


def test_pins_ignored_without_active_profile() -> None:
    """Pins only apply while their profile is active."""
    assert resolve_requested(make_app(CONFIG), "public").kind == "unknown"
    assert resolve_requested(make_app(CONFIG), "m1").kind == "local"


def test_pin_rewrites_name() -> None:
    """An active pin replaces the name, and may shadow a real model ID."""
    app = make_app(CONFIG, active_profile="work")
    public = resolve_requested(app, "public")
    assert (public.kind, public.model_id, public.requested, public.original) == (
        "local",
        "m2",
        "m2",
        "public",
    )
    assert public.rewritten and public.pinned
    shadow = resolve_requested(app, "m1")
    assert (shadow.kind, shadow.peer_id, shadow.requested) == ("peer", "or", "or/qwen")


def test_disabled_pin_is_no_model() -> None:
    """A pin with an empty target makes the name unusable (404 no model id)."""
    resolved = resolve_requested(make_app(CONFIG, active_profile="work"), "off")
    assert resolved.kind == "unknown" and resolved.requested == ""
    assert resolved.error is not None
    assert resolved.error.message == "no model id could be identified"


def test_pin_to_selector_applies_selector() -> None:
    """A pin target that is a selector goes through the selector."""
    app = make_app(CONFIG, {"m1": ProcessState.READY}, active_profile="work")
    resolved = resolve_requested(app, "fast")
    assert (resolved.kind, resolved.model_id, resolved.requested, resolved.selector_id) == (
        "local",
        "m1",
        "one",
        "sel",
    )


def test_pins_do_not_chain() -> None:
    """A name matched by a pin is not looked up in the pins again."""
    config = Config(
        models={"a": ModelConfig(id="a"), "b": ModelConfig(id="b")},
        profiles={"p": ProfileConfig(name="p", pins={"a": "b", "b": "a"})},
    )
    assert resolve_requested(make_app(config, active_profile="p"), "a").model_id == "b"


def test_unknown_active_profile_has_no_pins() -> None:
    """An active profile name missing from the config applies nothing."""
    assert resolve_requested(make_app(CONFIG, active_profile="gone"), "m2").model_id == "m2"


def test_selector_pin_strategy_to_peer() -> None:
    """A pin selector always takes its first target, here a peer model."""
    resolved = resolve_requested(make_app(CONFIG), "pinned")
    assert (resolved.kind, resolved.peer_id, resolved.requested, resolved.selector_id) == (
        "peer",
        "or",
        "or/qwen",
        "pinned",
    )
    resolved.release()


def test_resolve_local_ignores_pins_and_selectors() -> None:
    """resolve_local only knows model IDs, aliases and peers."""
    app = make_app(CONFIG, active_profile="work")
    assert resolve_local(app, "m1").model_id == "m1"
    assert resolve_local(app, "sel").kind == "unknown"


def test_upstream_path_longest_prefix() -> None:
    """The longest prefix naming a model wins; the rest stays raw."""
    app = make_app(CONFIG)
    resolved, rest = resolve_upstream_path(app, ["org", "big", "v1", "x%2Fy"])
    assert (resolved.kind, resolved.model_id, resolved.original) == ("local", "org/big", "org/big")
    assert rest == ["v1", "x%2Fy"]


def test_upstream_path_percent_encoded_slash() -> None:
    """``org%2Fbig`` names the model ``org/big``."""
    resolved, rest = resolve_upstream_path(make_app(CONFIG), [b"org%2Fbig", b"", b""])
    assert resolved.model_id == "org/big"
    assert rest == [b"", b""]


def test_upstream_path_model_only() -> None:
    """Just the model name leaves an empty remainder (the caller redirects)."""
    resolved, rest = resolve_upstream_path(make_app(CONFIG), ["gpt-4o"])
    assert (resolved.model_id, resolved.original, rest) == ("m1", "gpt-4o", [])


def test_upstream_path_peer() -> None:
    """Peer FQNs and unique bare names match in /upstream paths."""
    resolved, rest = resolve_upstream_path(make_app(CONFIG), ["or", "llama", "3", "v1", "models"])
    assert (resolved.kind, resolved.peer_model, rest) == ("peer", "llama/3", ["v1", "models"])


def test_upstream_path_rejects_selectors_and_unknowns() -> None:
    """Selector IDs and unknown names give 404 ``model not found``."""
    for segments in (["sel", "v1"], ["nope"], []):
        resolved, rest = resolve_upstream_path(make_app(CONFIG), segments)
        assert resolved.kind == "unknown" and rest == []
        assert resolved.error is not None and resolved.error.message == "model not found"


def test_upstream_path_pins() -> None:
    """Active pins apply by longest pin prefix; a disabled pin is not found."""
    app = make_app(CONFIG, active_profile="work")
    resolved, rest = resolve_upstream_path(app, ["public", "health"])
    assert (resolved.model_id, resolved.original, rest) == ("m2", "public", ["health"])
    off, _ = resolve_upstream_path(app, ["off", "x"])
    assert off.error is not None and off.error.message == "model not found"
    ghost, _ = resolve_upstream_path(app, ["ghost"])
    assert ghost.error is not None and ghost.error.status == 404


def test_index_cached_per_config() -> None:
    """The name index is built once per config object."""
    assert name_index(CONFIG) is name_index(CONFIG)


@given(st.lists(st.text(max_size=12), max_size=6))
def test_upstream_path_never_raises(segments: list[str]) -> None:
    """Arbitrary path segments always resolve to something, never raise."""
    resolved, rest = resolve_upstream_path(make_app(CONFIG), segments)
    assert resolved.kind in ("local", "peer", "unknown")
    assert len(rest) <= len(segments)
