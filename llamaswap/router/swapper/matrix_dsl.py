"""The matrix set DSL (SPEC 2.8): tokenizer, parser and projected expansion.

Grammar (whitespace ignored; ``&`` binds tighter than ``|``)::

    expr     := and_expr ( "|" and_expr )*
    and_expr := atom ( "&" atom )*
    atom     := IDENT | "+" IDENT | "(" expr ")"

An expression denotes an ordered family of model sets. ``expand`` lists it
naively; ``project`` computes the same family projected onto a bitmask of
relevant models, de-duplicated (first kept) and without dominated (strict
subset) members, which is all the solver needs and stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import attrs

__all__ = ["And", "DSLError", "Leaf", "Node", "Or", "ProjectionTooLarge", "Ref", "Token",
           "expand", "greedy_mask", "iter_combos", "parse", "project", "refs", "tokenize"]


class DSLError(ValueError):
    """A tokenize or parse error; the message has no set prefix yet."""


@attrs.frozen
class Token:
    """One token: kind is ``ident``, ``ref``, ``&``, ``|``, ``(`` or ``)``."""

    kind: str
    text: str
    pos: int


@attrs.frozen
class Leaf:
    """An identifier (a var or a model id, resolved later)."""

    name: str


@attrs.frozen
class Ref:
    """``+name``: another set's expression, inlined."""

    name: str


@attrs.frozen
class And:
    """All of the parts together (left-major Cartesian product)."""

    parts: tuple[Node, ...]


@attrs.frozen
class Or:
    """Any one of the alternatives, in order."""

    parts: tuple[Node, ...]


Node = Leaf | Ref | And | Or


def _is_ident_char(c: str) -> bool:
    return c.isalpha() or c.isdigit() or c in "_-."


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; DSLError names the offending position."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "&|()":
            tokens.append(Token(c, c, i))
            i += 1
        elif c == "+":
            j = i + 1
            while j < n and _is_ident_char(text[j]):
                j += 1
            if j == i + 1:
                # The position of the missing name: just after the '+'.
                raise DSLError(f"tokenize: expected set name after '+' at position {j}")
            tokens.append(Token("ref", text[i + 1:j], i))
            i = j
        elif _is_ident_char(c):
            j = i
            while j < n and _is_ident_char(text[j]):
                j += 1
            tokens.append(Token("ident", text[i:j], i))
            i = j
        else:
            raise DSLError(f"tokenize: unexpected character '{c}' at position {i}")
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> Node:
        parts = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.kind == "|":
            self.i += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.atom()]
        while (tok := self.peek()) is not None and tok.kind == "&":
            self.i += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise DSLError('parse: unexpected token "EOF"')
        self.i += 1
        if tok.kind == "ident":
            return Leaf(tok.text)
        if tok.kind == "ref":
            return Ref(tok.text)
        if tok.kind == "(":
            inner = self.expr()
            close = self.peek()
            if close is None or close.kind != ")":
                raise DSLError("parse: missing closing parenthesis")
            self.i += 1
            return inner
        raise DSLError(f'parse: unexpected token "{tok.text}"')


def parse(text: str) -> Node:
    """Parse one set expression; DSLError for empty or malformed input."""
    tokens = tokenize(text)
    if not tokens:
        raise DSLError("empty DSL expression")
    parser = _Parser(tokens)
    node = parser.expr()
    extra = parser.peek()
    if extra is not None:
        raise DSLError(f'parse: unexpected token "{extra.text}" after expression')
    return node


def refs(node: Node) -> list[str]:
    """The ``+name`` references in ``node``, in order of appearance."""
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Leaf):
        return []
    out: list[str] = []
    for part in node.parts:
        out.extend(refs(part))
    return out


class ProjectionTooLarge(Exception):
    """``project`` would combine more masks than its budget allows."""


def _antichain(family: Iterable[int]) -> list[int]:
    """De-duplicate (first kept) and drop strict subsets of another member, keeping order."""
    seen = list(dict.fromkeys(family))
    kept: list[int] = []
    for mask in sorted(seen, key=int.bit_count, reverse=True):
        if not any(mask & other == mask for other in kept):
            kept.append(mask)
    maximal = set(kept)
    return [m for m in seen if m in maximal]


def project(node: Node, bit_of: Callable[[str], int], budget: list[int] | None = None
            ) -> list[int]:
    """The family of ``node`` projected onto the bits ``bit_of`` gives (0 = irrelevant).

    ``bit_of`` maps a leaf name to its bit. Equal projections keep the first;
    dominated ones are dropped: neither can change the solver's answer. With
    ``budget`` (a one-item list, decremented), ProjectionTooLarge is raised once
    combining the parts of an ``&`` would look at more masks than it has left.
    """
    if isinstance(node, Leaf):
        return [bit_of(node.name)]
    if isinstance(node, Ref):
        raise TypeError("references must be inlined before projecting")
    if isinstance(node, Or):
        family: list[int] = []
        for part in node.parts:
            family.extend(project(part, bit_of, budget))
        return _antichain(family)
    result = [0]
    for part in node.parts:
        right = project(part, bit_of, budget)
        if budget is not None:
            budget[0] -= len(result) * len(right)
            if budget[0] < 0:
                raise ProjectionTooLarge()
        result = _antichain(a | b for a in result for b in right)
    return result


def greedy_mask(node: Node, bit_of: Callable[[str], int], weight: Callable[[int], int],
                want: int, have: int = 0) -> int:
    """One combination of ``node``, projected, chosen greedily on top of ``have``.

    Parts of an ``&`` are taken in order; at each ``|`` the alternative that, with what
    is chosen so far, holds ``want`` (when one can) and the most ``weight`` wins, the
    first on ties. Linear in the size of ``node``: the solver's fallback when
    ``project`` would be too costly.
    """
    if isinstance(node, Leaf):
        return bit_of(node.name)
    if isinstance(node, Ref):
        raise TypeError("references must be inlined before projecting")
    if isinstance(node, And):
        mask = 0
        for part in node.parts:
            mask |= greedy_mask(part, bit_of, weight, want, have | mask)
        return mask
    best: tuple[bool, int] | None = None
    chosen = 0
    for part in node.parts:
        mask = greedy_mask(part, bit_of, weight, want, have)
        score = (bool((have | mask) & want), weight(have | mask))
        if best is None or score > best:
            best, chosen = score, mask
    return chosen


def iter_combos(node: Node) -> Iterator[frozenset[str]]:
    """Lazily yield the combinations of ``node`` in order (duplicates included)."""
    if isinstance(node, Leaf):
        yield frozenset([node.name])
    elif isinstance(node, Ref):
        raise TypeError("references must be inlined before expanding")
    elif isinstance(node, Or):
        for part in node.parts:
            yield from iter_combos(part)
    else:
        yield from _product(node.parts, frozenset())


def _product(parts: tuple[Node, ...], acc: frozenset[str]) -> Iterator[frozenset[str]]:
    if not parts:
        yield acc
        return
    for combo in iter_combos(parts[0]):
        yield from _product(parts[1:], acc | combo)


def expand(node: Node) -> list[frozenset[str]]:
    """Every combination ``node`` denotes, in order, duplicates collapsed (naive)."""
    return list(dict.fromkeys(iter_combos(node)))
