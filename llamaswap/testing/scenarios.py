"""Scenarios for the contract checks: scripted ones, seeded random ones, a hypothesis strategy.

An op is a tuple; see ``llamaswap.testing.contract`` for what each one does.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["Op", "random_ops", "scenario_ops", "scripted_scenarios"]

Op = tuple[Any, ...]


def random_ops(rng: random.Random, n_models: int, length: int = 40) -> list[Op]:
    """A random scenario of ``length`` ops over ``n_models`` models."""
    ops: list[Op] = []
    for _ in range(length):
        r = rng.random()
        if r < 0.35:
            ops.append(("request", rng.randrange(-1 if rng.random() < 0.05 else 0, n_models)))
        elif r < 0.55:
            ops.append(("swap_done", rng.randrange(4), rng.random() < 0.8))
        elif r < 0.75:
            ops.append(("serve_done", rng.randrange(4)))
        elif r < 0.82:
            ops.append(("cancel", rng.randrange(8)))
        elif r < 0.87:
            ops.append(("disconnect", rng.randrange(8)))
        elif r < 0.9:
            ops.append(("deliver_cancels",))
        elif r < 0.93:
            ops.append(("crash", rng.randrange(n_models)))
        elif r < 0.99:
            ops.append(("unload", tuple(rng.sample(range(n_models), rng.randint(1, n_models))),
                        rng.random() < 0.5))
        else:
            ops.append(("shutdown",))
    return ops


def scenario_ops(n_models: int = 3, max_size: int = 40) -> Any:
    """A hypothesis strategy of op lists (imports hypothesis lazily)."""
    from hypothesis import strategies as st

    idx = st.integers(0, 7)
    model = st.integers(-1, n_models - 1)
    op = st.one_of(
        st.tuples(st.just("request"), model),
        st.tuples(st.just("request"), model),
        st.tuples(st.just("swap_done"), idx, st.booleans()),
        st.tuples(st.just("serve_done"), idx),
        st.tuples(st.just("cancel"), idx),
        st.tuples(st.just("disconnect"), idx),
        st.tuples(st.just("deliver_cancels")),
        st.tuples(st.just("crash"), st.integers(0, n_models - 1)),
        st.tuples(st.just("unload"), st.lists(st.integers(0, n_models - 1), min_size=1,
                                              max_size=n_models).map(tuple), st.booleans()),
        st.tuples(st.just("shutdown")),
    )
    return st.lists(op, max_size=max_size)


def scripted_scenarios() -> dict[str, list[Op]]:
    """Hand-written scenarios over three models that every scheduler must survive."""
    return {
        "serve_one": [("request", 0), ("swap_done", 0, True), ("serve_done", 0)],
        "flood_then_switch": [("request", 0)] * 12 + [("request", 1)] * 3
        + [("swap_done", 0, True)],
        "swap_failure": [("request", 0), ("request", 0), ("request", 1), ("swap_done", 0, False)],
        "cancel_waiting": [("request", 0), ("request", 1), ("cancel", 1), ("swap_done", 0, True)],
        "cancel_loading": [("request", 0), ("cancel", 0), ("swap_done", 0, True)],
        "disconnect_before_grant": [("request", 0), ("disconnect", 0), ("swap_done", 0, True),
                                    ("deliver_cancels",)],
        "unload_loading": [("request", 0), ("request", 1), ("unload", (0,), False)],
        "unload_serving": [("request", 0), ("swap_done", 0, True), ("request", 1),
                           ("unload", (0,), True), ("serve_done", 0)],
        "unload_all_async": [("request", 0), ("request", 1), ("request", 2),
                             ("unload", (0, 1, 2), False)],
        "crash_then_request": [("request", 0), ("swap_done", 0, True), ("serve_done", 0),
                               ("crash", 0), ("request", 0)],
        "unknown_model": [("request", -1), ("request", 0)],
        "shutdown_with_waiters": [("request", 0), ("request", 1), ("request", 0), ("shutdown",)],
        "shutdown_while_serving": [("request", 0), ("swap_done", 0, True), ("request", 2),
                                   ("shutdown",)],
    }
