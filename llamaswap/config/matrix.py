"""Matrix settings (SPEC 2.8): vars, evict_costs, sets, and a syntax/reference check of the DSL.

The DSL's tokenizer and parser are the matrix swapper's (``llamaswap.router.swapper.matrix_dsl``);
this module reports every problem the loader must reject, with key paths, and answers "may these
models run together?" for selectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from llamaswap.config.fields import Section
from llamaswap.config.gofmt import format_value
from llamaswap.config.model import MatrixConfig, frozen_mapping
from llamaswap.router.swapper.matrix_dsl import (
    And,
    DSLError,
    Leaf,
    Node,
    Or,
    Ref,
    parse,
    project,
    refs,
)

VAR_RE = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")

__all__ = ["DSLError", "can_run_together", "parse", "read_matrix"]


def _nodes(node: Node) -> Iterator[Node]:
    """``node`` and every node below it."""
    yield node
    if isinstance(node, And | Or):
        for part in node.parts:
            yield from _nodes(part)


def read_matrix(section: Section, models: Mapping[str, object]) -> MatrixConfig | None:
    """Validate a matrix section; None when it has problems (they are recorded)."""
    before = len(section.problems.lines)
    variables: dict[str, str] = {}
    vars_section = section.section("vars")
    for key, value in vars_section.raw.items():
        name = format_value(key)
        target = vars_section.scalar_str(value, vars_section.at(name))
        if not VAR_RE.match(name):
            vars_section.bad(name, f'var key "{name}" must contain only alphanumeric, \'-\' or '
                             "'.' characters and be 1-32 characters long")
        elif target not in models:
            vars_section.bad(name, f'var key "{name}" references unknown model "{target}"')
        else:
            variables[name] = target
    costs: dict[str, int] = {}
    costs_section = section.section("evict_costs")
    for key in costs_section.raw:
        name = format_value(key)
        cost = costs_section.get_int(key, 1)
        if cost <= 0:
            costs_section.bad(name, f'evict_cost for "{name}" must be a positive integer, '
                              f"got {cost}")
        elif name not in variables and name not in models:
            costs_section.bad(name, f'unknown var or model "{name}"')
        else:
            costs[name] = cost
    sets_section = section.section("sets")
    sets: list[tuple[str, str]] = []
    trees: dict[str, Node] = {}
    for key, value in sets_section.raw.items():
        name = format_value(key)
        expr = sets_section.scalar_str(value, sets_section.at(name))
        sets.append((name, expr))
        try:
            trees[name] = parse(expr)
        except DSLError as exc:
            sets_section.bad(name, f'set "{name}": {exc}')
    if not sets:
        section.bad("sets", "matrix must define at least one set")
    for name, tree in trees.items():
        for node in _nodes(tree):
            if isinstance(node, Leaf) and node.name not in variables and node.name not in models:
                sets_section.bad(name, f'set "{name}": unknown var or model "{node.name}"')
            elif isinstance(node, Ref) and node.name not in dict(sets):
                sets_section.bad(name, f'set "{name}" references undefined set "{node.name}"')
    _check_cycles(trees, sets_section)
    if len(section.problems.lines) > before:
        return None
    return MatrixConfig(
        sets=tuple(sets), vars=frozen_mapping(variables), evict_costs=frozen_mapping(costs)
    )


def _check_cycles(trees: Mapping[str, Node], section: Section) -> None:
    state: dict[str, int] = {}

    def visit(name: str) -> bool:
        if state.get(name) == 1:
            section.bad(name, f'circular reference detected involving set "{name}"')
            return False
        if state.get(name) == 2 or name not in trees:
            return True
        state[name] = 1
        ok = all(visit(ref) for ref in refs(trees[name]))
        state[name] = 2
        return ok

    for name in trees:
        if not visit(name):
            return


def can_run_together(matrix: MatrixConfig, targets: frozenset[str]) -> bool:
    """True when one expanded set of ``matrix`` holds every model in ``targets``."""
    trees = {name: parse(expr) for name, expr in matrix.sets}
    bits = {model: 1 << i for i, model in enumerate(sorted(targets))}
    everything = (1 << len(bits)) - 1

    def inline(node: Node) -> Node:
        if isinstance(node, Ref):
            return inline(trees[node.name])  # cycles were rejected when loading
        if isinstance(node, And | Or):
            return type(node)(tuple(inline(part) for part in node.parts))
        return node

    def bit_of(name: str) -> int:
        return bits.get(matrix.vars.get(name, name), 0)

    return any(
        mask == everything for tree in trees.values() for mask in project(inline(tree), bit_of)
    )
