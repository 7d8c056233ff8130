"""MatrixSwapper: evict the cheapest way to reach an allowed set (SPEC 2.8, 4.4).

``compile_matrix`` validates and compiles a ``MatrixConfig`` (the config
loader calls it too); ``CompiledMatrix.solve`` answers one eviction question
by projecting every set onto the bits of the target and the running models,
so large products stay cheap.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from llamaswap.config.model import MatrixConfig
from llamaswap.interfaces import ISwapper
from llamaswap.router.swapper.matrix_dsl import (
    And,
    DSLError,
    Leaf,
    Node,
    Or,
    ProjectionTooLarge,
    Ref,
    greedy_mask,
    iter_combos,
    parse,
    project,
)
from llamaswap.router.swapper.matrix_dsl import refs as node_refs

__all__ = ["CompiledMatrix", "Decision", "MatrixError", "MatrixSwapper", "compile_matrix"]

_VAR_KEY = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")
# Masks one decision may combine exactly (tens of milliseconds at most); past it the rest
# of the sets are solved greedily, so no matrix makes a decision take exponential time.
PROJECTION_BUDGET = 50_000


class MatrixError(ValueError):
    """The matrix configuration is invalid; the message starts with ``matrix: ``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"matrix: {message}")


@attrs.frozen
class CompiledSet:
    """One set: its name, its DSL text and its expression with references inlined."""

    name: str
    dsl: str
    node: Node
    models: frozenset[str]


@attrs.frozen
class Decision:
    """The solver's answer for one target."""

    evict: list[str]
    set_name: str | None = None
    dsl: str = ""
    cost: int = 0
    kept: frozenset[str] = frozenset()
    relevant: frozenset[str] = frozenset()


@attrs.frozen
class CompiledMatrix:
    """Sets in compile order plus eviction costs by model id."""

    sets: tuple[CompiledSet, ...]
    costs: Mapping[str, int]

    def cost_of(self, model: str) -> int:
        """The eviction cost of ``model`` (1 unless configured)."""
        return self.costs.get(model, 1)

    def solve(self, target: str, running: Sequence[str]) -> Decision:
        """The cheapest set containing ``target`` given ``running`` (SPEC 4.4).

        Exact unless the running models can be kept in more ways than
        ``PROJECTION_BUDGET`` allows to compare (running models that no set allows
        together, under sets that multiply many alternatives): then the sets left are
        each solved greedily, and the answer is a valid but maybe not the cheapest set.
        """
        if target in running:
            return Decision([])
        relevant = list(dict.fromkeys(running))
        bit = {m: 1 << i for i, m in enumerate(relevant)}
        tbit = 1 << len(relevant)
        bit[target] = tbit
        run_mask = tbit - 1
        costs = [self.cost_of(m) for m in relevant]

        def lost_cost(mask: int) -> int:
            lost = run_mask & ~mask
            return sum(costs[i] for i in range(len(relevant)) if lost >> i & 1)

        def bit_of(name: str) -> int:
            return bit.get(name, 0)

        best: tuple[int, CompiledSet, int] | None = None
        budget = [PROJECTION_BUDGET]
        for cset in self.sets:
            if target not in cset.models:
                continue
            try:
                masks = project(cset.node, bit_of, budget)
            except ProjectionTooLarge:
                # Too many ways to keep these running models: one good way instead.
                masks = [greedy_mask(cset.node, bit_of, lambda m: -lost_cost(m), tbit)]
                budget[0] = 0
            for mask in masks:
                if not mask & tbit:
                    continue
                cost = lost_cost(mask)
                if best is None or cost < best[0]:
                    best = (cost, cset, mask)
        if best is None:
            return Decision(list(running), cost=sum(self.cost_of(m) for m in running))
        cost, cset, mask = best
        evict = [m for m in running if not bit[m] & mask]
        kept = frozenset(m for m in [*relevant, target] if bit[m] & mask)
        return Decision(evict, cset.name, cset.dsl, cost, kept, frozenset([*relevant, target]))


def _combination(node: Node, kept: frozenset[str], relevant: frozenset[str],
                 budget: int = 10_000) -> tuple[str, ...]:
    """The first combination of ``node`` that keeps exactly ``kept`` (for the log line).

    Looks at no more than ``budget`` combinations, then falls back to ``kept``.
    """
    for combo in itertools.islice(iter_combos(node), budget):
        if combo & relevant == kept:
            return tuple(sorted(combo))
    return tuple(sorted(kept))


def _resolve(node: Node, set_name: str, vars_: Mapping[str, str], model_ids: set[str],
             compiled: Mapping[str, Node]) -> Node:
    if isinstance(node, Leaf):
        if node.name in vars_:
            return Leaf(vars_[node.name])
        if node.name in model_ids:
            return node
        raise MatrixError(f'set "{set_name}": unknown var or model "{node.name}"')
    if isinstance(node, Ref):
        return compiled[node.name]
    parts = tuple(_resolve(p, set_name, vars_, model_ids, compiled) for p in node.parts)
    return And(parts) if isinstance(node, And) else Or(parts)


def _models_in(node: Node) -> frozenset[str]:
    if isinstance(node, Leaf):
        return frozenset([node.name])
    if isinstance(node, Ref):
        return frozenset()
    return frozenset().union(*(_models_in(p) for p in node.parts))


def _as_matrix_config(value: Any) -> MatrixConfig:
    if isinstance(value, MatrixConfig):
        return value
    sets = value.get("sets") or {}
    return MatrixConfig(sets=tuple((str(k), str(v)) for k, v in dict(sets).items()),
                        vars=dict(value.get("vars") or {}),
                        evict_costs=dict(value.get("evict_costs") or {}))


def compile_matrix(matrix: MatrixConfig | Mapping[str, Any],
                   model_ids: Iterable[str]) -> CompiledMatrix:
    """Validate and compile a matrix; MatrixError names the set and the position."""
    config = _as_matrix_config(matrix)
    ids = set(model_ids)
    if not config.sets:
        raise MatrixError("matrix must define at least one set")
    for key, model in config.vars.items():
        if not _VAR_KEY.match(key):
            raise MatrixError(f'var key "{key}" must contain only alphanumeric, \'-\' or \'.\' '
                              "characters and be 1-32 characters long")
        if model not in ids:
            raise MatrixError(f'var key "{key}" references unknown model "{model}"')
    costs: dict[str, int] = {}
    for key, value in config.evict_costs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise MatrixError(f'evict_cost for "{key}" must be a positive integer, got {value}')
        if key in config.vars:
            costs[config.vars[key]] = value
        elif key in ids:
            costs[key] = value
        else:
            raise MatrixError(f'evict_costs: unknown var or model "{key}"')
    parsed: dict[str, Node] = {}
    dsl: dict[str, str] = {}
    for name, text in config.sets:
        try:
            parsed[name] = parse(text)
        except DSLError as e:
            raise MatrixError(f'set "{name}": {e}') from None
        dsl[name] = text
        for ref in node_refs(parsed[name]):
            if ref not in dict(config.sets):
                raise MatrixError(f'set "{name}" references undefined set "{ref}"')
    order: list[str] = []
    resolved: dict[str, Node] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in resolved:
            return
        if name in visiting:
            raise MatrixError(f'circular reference detected involving set "{name}"')
        visiting.add(name)
        for ref in node_refs(parsed[name]):
            visit(ref)
        visiting.discard(name)
        resolved[name] = _resolve(parsed[name], name, config.vars, ids, resolved)
        order.append(name)

    for name, _ in config.sets:
        visit(name)
    sets = tuple(CompiledSet(n, dsl[n], resolved[n], _models_in(resolved[n])) for n in order)
    return CompiledMatrix(sets, costs)


@implementer(ISwapper)
class MatrixSwapper:
    """Evicts the running models outside the cheapest allowed set containing the target."""

    def __init__(self, matrix: MatrixConfig | Mapping[str, Any], model_ids: Iterable[str], *,
                 log: Logger | None = None) -> None:
        self.compiled = compile_matrix(matrix, model_ids)
        self.log = log or Logger()

    def eviction_for(self, target: str, running: Sequence[str]) -> list[str]:
        """Running models outside the chosen set; all of them when target is in no set."""
        return self.compiled.solve(target, running).evict

    def on_swap_start(self, target: str, running: Sequence[str]) -> None:
        """Log the decision once: set, DSL, eviction and cost."""
        others = [m for m in running if m != target]
        if not others:
            self.log.info("matrix: model={model} starting (no models running)", model=target)
            return
        d = self.compiled.solve(target, running)
        chosen = [s for s in self.compiled.sets if s.name == d.set_name]
        combo = _combination(chosen[0].node, d.kept, d.relevant) if chosen else ()
        self.log.info(
            'matrix: model={model} set={set} dsl="{dsl}" evict=[{evict}] target=[{target}] '
            "cost={cost}", model=target, set=d.set_name or "(none)", dsl=d.dsl,
            evict=" ".join(d.evict), target=" ".join(combo), cost=d.cost)
