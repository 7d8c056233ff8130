"""The matrix DSL, compiler and solver (SPEC 2.8, 4.4), checked against a naive solver."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import Logger, LogLevel, formatEvent
from zope.interface.verify import verifyObject

from llamaswap.config.model import MatrixConfig
from llamaswap.interfaces import ISwapper
from llamaswap.router.swapper import matrix as matrix_module
from llamaswap.router.swapper.matrix import MatrixError, MatrixSwapper, compile_matrix
from llamaswap.router.swapper.matrix_dsl import And, Leaf, Or, expand, parse


def swapper(sets: dict[str, str], models: Sequence[str], vars_: dict[str, str] | None = None,
            costs: dict[str, int] | None = None, log: Logger | None = None) -> MatrixSwapper:
    """A MatrixSwapper over ``sets`` (in order)."""
    cfg = MatrixConfig(sets=tuple(sets.items()), vars=vars_ or {}, evict_costs=costs or {})
    return MatrixSwapper(cfg, models, log=log)


def naive(sets: list[tuple[str, str]], models: Sequence[str], target: str,
          running: Sequence[str], costs: dict[str, int]) -> tuple[list[str], str | None]:
    """The SPEC 4.4 description, literally: expand everything, pick the cheapest, earliest."""
    compiled = compile_matrix(MatrixConfig(sets=tuple(sets)), models)
    if target in running:
        return [], None
    best: tuple[int, str, frozenset[str]] | None = None
    for cset in compiled.sets:
        for combo in expand(cset.node):
            if target not in combo:
                continue
            cost = sum(costs.get(m, 1) for m in running if m not in combo)
            if best is None or cost < best[0]:
                best = (cost, cset.name, combo)
    if best is None:
        return list(running), None
    return [m for m in running if m not in best[2]], best[1]


def test_matrix_parse_precedence() -> None:
    """& binds tighter than |, and parentheses group."""
    assert parse("a|b&c") == Or((Leaf("a"), And((Leaf("b"), Leaf("c")))))
    assert parse(" ( a | b ) & c ") == And((Or((Leaf("a"), Leaf("b"))), Leaf("c")))


def test_matrix_expand_examples() -> None:
    """The SPEC 2.8 meaning examples expand as documented, duplicates collapsed."""
    def sets(text: str) -> list[set[str]]:
        return [set(c) for c in expand(parse(text))]

    assert sets("a|b") == [{"a"}, {"b"}]
    assert sets("a&b") == [{"a", "b"}]
    assert sets("(a|b)&(c|d)") == [{"a", "c"}, {"a", "d"}, {"b", "c"}, {"b", "d"}]
    assert sets("a|b&c") == [{"a"}, {"b", "c"}]
    assert sets("a|a|b") == [{"a"}, {"b"}]


@pytest.mark.parametrize(("expr", "message"), [
    ("", 'set "s": empty DSL expression'),
    ("a & $", "set \"s\": tokenize: unexpected character '$' at position 4"),
    ("a | +", "set \"s\": tokenize: expected set name after '+' at position 5"),
    ("+", "set \"s\": tokenize: expected set name after '+' at position 1"),
    ("a&+ b", "set \"s\": tokenize: expected set name after '+' at position 3"),
    ("a & | b", 'set "s": parse: unexpected token "|"'),
    ("(a | b", 'set "s": parse: missing closing parenthesis'),
    ("a b", 'set "s": parse: unexpected token "b" after expression'),
    ("a & ghost", 'set "s": unknown var or model "ghost"'),
    ("a & +nope", 'set "s" references undefined set "nope"'),
])
def test_matrix_compile_errors(expr: str, message: str) -> None:
    """Compile errors name the set and the position, prefixed with matrix:."""
    with pytest.raises(MatrixError) as info:
        compile_matrix(MatrixConfig(sets=(("s", expr),)), ["a", "b"])
    assert str(info.value) == f"matrix: {message}"


def test_matrix_circular_reference() -> None:
    """A reference cycle is reported with the set where it closes."""
    with pytest.raises(MatrixError, match='circular reference detected involving set "x"'):
        compile_matrix(MatrixConfig(sets=(("x", "a & +y"), ("y", "+x"))), ["a"])


@pytest.mark.parametrize(("cfg", "message"), [
    (MatrixConfig(sets=()), "matrix must define at least one set"),
    (MatrixConfig(sets=(("s", "a"),), vars={"bad_key": "a"}), 'var key "bad_key" must contain'),
    (MatrixConfig(sets=(("s", "a"),), vars={"v": "zz"}), 'var key "v" references unknown model'),
    (MatrixConfig(sets=(("s", "a"),), evict_costs={"a": 0}),
     'evict_cost for "a" must be a positive integer, got 0'),
    (MatrixConfig(sets=(("s", "a"),), evict_costs={"q": 2}), 'evict_costs: unknown var or model'),
])
def test_matrix_config_errors(cfg: MatrixConfig, message: str) -> None:
    """vars and evict_costs are validated with the SPEC messages."""
    with pytest.raises(MatrixError) as info:
        compile_matrix(cfg, ["a"])
    assert message in str(info.value)
    assert str(info.value).startswith("matrix: ")


def test_matrix_vars_and_refs_resolve() -> None:
    """Identifiers resolve to vars first; +ref inlines another set; refs compile first."""
    compiled = compile_matrix(
        {"sets": {"big": "+small | L", "small": "g & v"}, "vars": {"g": "org/gemma:7b"}},
        ["org/gemma:7b", "v", "L"])
    assert [s.name for s in compiled.sets] == ["small", "big"]
    assert compiled.sets[1].models == {"org/gemma:7b", "v", "L"}


def test_matrix_spec_example_standard_and_full() -> None:
    """standard keeps voxtral for gemma; full evicts it for llama70B."""
    sw = swapper({"standard": "(g|q|m) & v", "full": "L"}, ["g", "q", "m", "v", "L"])
    assert verifyObject(ISwapper, sw)
    assert sw.eviction_for("g", ["v"]) == []
    assert sw.compiled.solve("g", ["v"]).set_name == "standard"
    assert sw.eviction_for("L", ["v"]) == ["v"]
    assert sw.compiled.solve("L", ["v"]).set_name == "full"


def test_matrix_spec_example_costs() -> None:
    """With b=10, c=1 and {b, c} running, a picks a_with_b and evicts c."""
    sw = swapper({"a_with_c": "a & c", "a_with_b": "a & b"}, ["a", "b", "c"],
                 costs={"b": 10, "c": 1})
    d = sw.compiled.solve("a", ["b", "c"])
    assert (d.set_name, d.evict, d.cost) == ("a_with_b", ["c"], 1)


def test_matrix_spec_example_tie_goes_to_earlier_set() -> None:
    """With nothing running the first set wins the tie."""
    sw = swapper({"first": "a & b", "second": "a & c"}, ["a", "b", "c"])
    assert sw.compiled.solve("a", []).set_name == "first"


def test_matrix_target_running_evicts_nothing() -> None:
    """A target already in the running set evicts nothing."""
    sw = swapper({"s": "a"}, ["a", "b"])
    assert sw.eviction_for("a", ["a", "b"]) == []


def test_matrix_target_in_no_set_runs_alone() -> None:
    """A model in no set evicts everything running."""
    sw = swapper({"s": "a & b"}, ["a", "b", "z"])
    assert sw.eviction_for("z", ["b", "a"]) == ["b", "a"]


def test_matrix_evict_keeps_running_order() -> None:
    """The eviction keeps the order of ``running``."""
    sw = swapper({"s": "t & k"}, ["t", "k", "x", "y"])
    assert sw.eviction_for("t", ["y", "k", "x"]) == ["y", "x"]


def test_matrix_var_costs_apply_to_model() -> None:
    """An evict cost keyed by a var applies to the var's model."""
    sw = swapper({"one": "a & big", "two": "a & c"}, ["a", "org/big", "c"],
                 vars_={"big": "org/big"}, costs={"big": 5})
    assert sw.eviction_for("a", ["org/big", "c"]) == ["c"]


def test_matrix_on_swap_start_logs_one_line() -> None:
    """on_swap_start logs the chosen set, eviction and cost."""
    events: list[dict[str, object]] = []
    log = Logger(observer=events.append)  # type: ignore[arg-type]
    sw = swapper({"standard": "(g|q) & v", "full": "L"}, ["g", "q", "v", "L"], log=log)
    sw.on_swap_start("L", ["v"])
    sw.on_swap_start("g", [])
    sw.on_swap_start("q", ["L"])
    texts = [formatEvent(e) for e in events]
    assert texts == ['matrix: model=L set=full dsl="L" evict=[v] target=[L] cost=1',
                     "matrix: model=g starting (no models running)",
                     'matrix: model=q set=standard dsl="(g|q) & v" evict=[L] target=[q v] cost=1']
    assert all(e["log_level"] == LogLevel.info for e in events)


def test_matrix_large_product_is_fast() -> None:
    """10 alternatives x 6 dimensions (a million combinations) decide well under 1 ms."""
    dims = [[f"m{d}_{i}" for i in range(10)] for d in range(6)]
    models = [m for dim in dims for m in dim] + ["solo"]
    expr = " & ".join("(" + " | ".join(dim) + ")" for dim in dims)
    sw = swapper({"big": expr, "alone": "solo"}, models)
    running = [dims[0][3], dims[1][5], dims[2][9], "solo"]
    assert sw.eviction_for(dims[3][1], running) == ["solo"]
    start = time.perf_counter()
    for _ in range(200):
        sw.eviction_for(dims[4][2], running)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 0.001


MODELS = ["a", "b", "c", "d", "e"]
atoms = st.sampled_from(MODELS)


def _exprs() -> st.SearchStrategy[str]:
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.builds(lambda xs: " & ".join(xs), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda xs: "(" + " | ".join(xs) + ")", st.lists(inner, min_size=2,
                                                                     max_size=3)),
        ),
        max_leaves=8,
    )


@settings(max_examples=200, deadline=None)
@given(
    sets=st.lists(_exprs(), min_size=1, max_size=3),
    target=atoms,
    running=st.lists(atoms, unique=True, max_size=4),
    costs=st.dictionaries(atoms, st.integers(1, 4), max_size=3),
)
def test_matrix_solver_equals_naive(sets: list[str], target: str, running: list[str],
                                    costs: dict[str, int]) -> None:
    """The projected solver gives the naive solver's eviction and set for random matrices."""
    named = [(f"s{i}", expr) for i, expr in enumerate(sets)]
    sw = swapper(dict(named), MODELS, costs=costs)
    want_evict, want_set = naive(named, MODELS, target, running, costs)
    got = sw.compiled.solve(target, running)
    assert got.evict == want_evict
    if want_set is not None:
        assert got.set_name == want_set


@settings(max_examples=200, deadline=None)
@given(
    sets=st.lists(_exprs(), min_size=1, max_size=3),
    target=atoms,
    running=st.lists(atoms, unique=True, max_size=4),
    costs=st.dictionaries(atoms, st.integers(1, 4), max_size=3),
)
def test_matrix_fallback_keeps_an_allowed_set(sets: list[str], target: str, running: list[str],
                                              costs: dict[str, int]) -> None:
    """Past the projection budget the solver still answers with a set that holds the target
    and what it keeps running, and evicts the rest in running's order."""
    named = [(f"s{i}", expr) for i, expr in enumerate(sets)]
    sw = swapper(dict(named), MODELS, costs=costs)
    _, want_set = naive(named, MODELS, target, running, costs)
    with mock.patch.object(matrix_module, "PROJECTION_BUDGET", 0):
        got = sw.compiled.solve(target, running)
    if target in running:
        assert got.evict == []
        return
    if want_set is None:
        assert got.evict == running
        return
    kept = {m for m in running if m not in got.evict} | {target}
    assert got.evict == [m for m in running if m not in kept]
    [chosen] = [s for s in sw.compiled.sets if s.name == got.set_name]
    assert any(kept <= combo for combo in expand(chosen.node))


def test_matrix_many_ways_to_keep_running_models_are_solved_greedily() -> None:
    """A product of 20 sets of 71 alternatives over 27 running models (more than any one
    set allows together) is answered without comparing every way to keep them."""
    r = [f"r{i}" for i in range(8)]
    fours = " | ".join("(" + " & ".join(c) + ")" for c in itertools.combinations(r, 4))
    sets = {f"s{i}": f"{fours} | t{i}" for i in range(20)}
    sets["all"] = " & ".join(f"+s{i}" for i in range(20))
    models = r + [f"t{i}" for i in range(20)]
    sw = swapper(sets, models)
    running = sorted(m for m in models if m != "t19")
    with mock.patch.object(matrix_module, "greedy_mask", wraps=matrix_module.greedy_mask) as g:
        assert sw.eviction_for("t19", running) == ["t0", "t1"]
    assert g.called
