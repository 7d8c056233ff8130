"""Selector strategies: pin, warm, spillover with counters (SPEC 5.2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from webapi_support import make_app

from llamaswap.config.model import Config, ModelConfig, PeerConfig, SelectorConfig
from llamaswap.process.state import ProcessState
from llamaswap.web.names import resolve_requested, selector_runtime
from llamaswap.web.selectors import SelectorRuntime

S = ProcessState


def config_with(selector: SelectorConfig) -> Config:
    """Three local models a, b, c (alias cc), a peer p/x, and ``selector``."""
    return Config(
        models={
            "a": ModelConfig(id="a"),
            "b": ModelConfig(id="b"),
            "c": ModelConfig(id="c", aliases=("cc",)),
        },
        aliases={"cc": "c"},
        peers={"p": PeerConfig(id="p", proxy="http://p", models=("x",))},
        selectors={selector.id: selector},
    )


def warm(*targets: str) -> Config:
    """A config with warm selector ``s`` over ``targets``."""
    return config_with(SelectorConfig(id="s", strategy="warm", targets=targets))


def spill(*targets: str, n: int = 1) -> Config:
    """A config with spillover selector ``s`` over ``targets``."""
    return config_with(SelectorConfig(id="s", strategy="spillover", targets=targets, spillover=n))


def test_warm_prefers_ready() -> None:
    """warm picks the first ready target even after a starting one."""
    app = make_app(warm("a", "b", "cc"), {"b": S.STARTING, "c": S.READY})
    resolved = resolve_requested(app, "s")
    assert (resolved.model_id, resolved.requested, resolved.selector_id) == ("c", "cc", "s")


def test_warm_then_starting_then_first() -> None:
    """warm falls back to a starting target, then to the first target."""
    assert resolve_requested(make_app(warm("a", "b"), {"b": S.STARTING}), "s").model_id == "b"
    assert resolve_requested(make_app(warm("a", "b"), {"b": S.STOPPING}), "s").model_id == "a"


def test_pin_strategy_ignores_states() -> None:
    """pin always picks the first target."""
    config = config_with(SelectorConfig(id="s", strategy="pin", targets=("a", "b")))
    assert resolve_requested(make_app(config, {"b": S.READY}), "s").model_id == "a"


def test_spillover_example_from_spec() -> None:
    """spillover 2 with nothing running: 1st->a, 2nd->a, 3rd->b."""
    app = make_app(spill("a", "b", n=2))
    picks = [resolve_requested(app, "s").model_id for _ in range(3)]
    assert picks == ["a", "a", "b"]


def test_spillover_release_frees_capacity() -> None:
    """Released requests stop counting; release is idempotent."""
    app = make_app(spill("a", "b"))
    first = resolve_requested(app, "s")
    assert first.model_id == "a"
    first.release()
    first.release()
    assert selector_runtime(app).count("s", "a") == 0
    assert resolve_requested(app, "s").model_id == "a"


def test_spillover_ready_targets_round_robin() -> None:
    """Ready targets share the load: least busy first, ties round-robin."""
    app = make_app(spill("a", "b", n=1), {"a": S.READY, "b": S.READY})
    picks = [resolve_requested(app, "s").model_id for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]
    assert selector_runtime(app).count("s", "a") == 2


def test_spillover_skips_stopping() -> None:
    """A stopping local target is never chosen."""
    app = make_app(spill("a", "b"), {"a": S.STOPPING})
    assert resolve_requested(app, "s").model_id == "b"


def test_spillover_no_targets_is_503() -> None:
    """With every target stopping/shut down, the selector answers 503."""
    app = make_app(spill("a", "b"), {"a": S.STOPPING, "b": S.SHUTDOWN})
    resolved = resolve_requested(app, "s")
    assert resolved.kind == "selector" and resolved.selector_id == "s"
    assert resolved.error is not None and resolved.error.status == 503
    assert resolved.error.message == 'selector "s" has no available spillover targets'


def test_spillover_peer_target_counts() -> None:
    """Peer targets are cold until they carry a request."""
    app = make_app(spill("p/x", "a", n=1))
    first = resolve_requested(app, "s")
    assert (first.kind, first.peer_id) == ("peer", "p")
    second = resolve_requested(app, "s")
    assert second.model_id == "a"
    first.release()
    second.release()
    assert selector_runtime(app).counts == {}


def test_spillover_all_busy_goes_least_busy() -> None:
    """Over the limit with no cold target left, the least busy active target is used."""
    app = make_app(spill("a", "b", n=1), {"a": S.READY, "b": S.READY})
    held = [resolve_requested(app, "s") for _ in range(3)]
    held[1].release()
    assert resolve_requested(app, "s").model_id == "b"


def test_non_spillover_release_is_noop() -> None:
    """warm selections do not count anything."""
    app = make_app(warm("a"))
    resolve_requested(app, "s").release()
    assert selector_runtime(app).counts == {}


def test_new_app_starts_with_fresh_counters() -> None:
    """Counters live with the App; a replaced App does not inherit them."""
    config = spill("a", "b")
    old = make_app(config)
    held = resolve_requested(old, "s")
    assert resolve_requested(make_app(config), "s").model_id == "a"
    held.release()


@given(st.lists(st.sampled_from(["acquire", "release"]), max_size=40))
def test_counts_never_negative(ops: list[str]) -> None:
    """Any interleaving of requests and releases keeps counts exact and non-negative."""
    runtime = SelectorRuntime()
    selector = SelectorConfig(id="s", strategy="spillover", targets=("a", "b"), spillover=2)
    held = []
    for op in ops:
        if op == "acquire":
            held.append(runtime.choose(selector, lambda t: S.STOPPED)[1])
        elif held:
            held.pop(0)()
    assert all(v > 0 for v in runtime.counts.values())
    assert sum(runtime.counts.values()) == len(held)
