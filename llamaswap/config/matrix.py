"""Matrix settings (SPEC 2.8): vars, evict_costs, sets, and a syntax/reference check of the DSL.

The full compiler and solver live in ``llamaswap.router.swapper``; this module only checks
what the loader must reject and can answer "may these models run together?" for selectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from llamaswap.config.fields import Section
from llamaswap.config.gofmt import format_value
from llamaswap.config.model import MatrixConfig, frozen_mapping

VAR_RE = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")

# AST: ("id", name) | ("ref", set) | ("or", [nodes]) | ("and", [nodes])
Node = tuple[str, str | list[Any]]


class DSLError(ValueError):
    """A set expression that does not compile."""


def _is_ident(ch: str) -> bool:
    return ch.isalnum() or ch in "_-."


def tokenize(expr: str) -> list[tuple[str, str, int]]:
    """``(kind, text, position)`` tokens; kinds: id, ref, op."""
    tokens: list[tuple[str, str, int]] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in "|&()":
            tokens.append(("op", ch, i))
            i += 1
        elif ch == "+" or _is_ident(ch):
            start = i
            j = i + 1 if ch == "+" else i
            while j < len(expr) and expr[j].isspace() and ch == "+":
                j += 1
            k = j
            while k < len(expr) and _is_ident(expr[k]):
                k += 1
            if k == j:
                raise DSLError(f"tokenize: expected set name after '+' at position {start}")
            tokens.append(("ref" if ch == "+" else "id", expr[j:k], start))
            i = k
        else:
            raise DSLError(f"tokenize: unexpected character '{ch}' at position {i}")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> Node:
        items = [self.and_expr()]
        while (tok := self.peek()) and tok[1] == "|" and tok[0] == "op":
            self.pos += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else ("or", items)

    def and_expr(self) -> Node:
        items = [self.atom()]
        while (tok := self.peek()) and tok[1] == "&" and tok[0] == "op":
            self.pos += 1
            items.append(self.atom())
        return items[0] if len(items) == 1 else ("and", items)

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise DSLError('parse: unexpected token "EOF"')
        self.pos += 1
        if tok[0] in ("id", "ref"):
            return (tok[0], tok[1])
        if tok[1] == "(":
            node = self.expr()
            close = self.peek()
            if close is None or close[1] != ")":
                raise DSLError("parse: missing closing parenthesis")
            self.pos += 1
            return node
        raise DSLError(f'parse: unexpected token "{tok[1]}"')


def parse(expr: str) -> Node:
    """Parse one set expression; DSLError says why it does not."""
    if not expr.strip():
        raise DSLError("empty DSL expression")
    parser = _Parser(tokenize(expr))
    node = parser.expr()
    rest = parser.peek()
    if rest is not None:
        raise DSLError(f'parse: unexpected token "{rest[1]}" after expression')
    return node


def _children(node: Node) -> list[Node]:
    return node[1] if isinstance(node[1], list) else []


def _walk(node: Node) -> Iterable[Node]:
    yield node
    for child in _children(node):
        yield from _walk(child)


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
        for node in _walk(tree):
            if node[0] == "id" and node[1] not in variables and node[1] not in models:
                sets_section.bad(name, f'set "{name}": unknown var or model "{node[1]}"')
            elif node[0] == "ref" and node[1] not in dict(sets):
                sets_section.bad(name, f'set "{name}" references undefined set "{node[1]}"')
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
        refs = [str(n[1]) for n in _walk(trees[name]) if n[0] == "ref"]
        ok = all(visit(ref) for ref in refs)
        state[name] = 2
        return ok

    for name in trees:
        if not visit(name):
            return


def can_run_together(matrix: MatrixConfig, targets: frozenset[str]) -> bool:
    """True when one expanded set of ``matrix`` holds every model in ``targets``."""
    trees = {name: parse(expr) for name, expr in matrix.sets}
    memo: dict[str, set[frozenset[str]]] = {}

    def project(node: Node) -> set[frozenset[str]]:
        kind, value = node
        if kind == "id":
            model = matrix.vars.get(str(value), str(value))
            return {frozenset({model}) & targets}
        if kind == "ref":
            name = str(value)
            if name not in memo:
                memo[name] = set()  # a cycle would have been rejected already
                memo[name] = project(trees[name])
            return memo[name]
        parts = [project(child) for child in _children(node)]
        if kind == "or":
            return set().union(*parts)
        combined: set[frozenset[str]] = {frozenset()}
        for part in parts:
            combined = _prune({a | b for a in combined for b in part})
        return combined

    return any(targets <= combo for name in trees for combo in project(("ref", name)))


def _prune(combos: set[frozenset[str]]) -> set[frozenset[str]]:
    """Drop combinations contained in another (they can never reach more targets)."""
    return {c for c in combos if not any(c < other for other in combos)}
