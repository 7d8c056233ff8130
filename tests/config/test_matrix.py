"""Matrix settings: vars, evict_costs, ordered sets and DSL checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llamaswap.config.matrix import DSLError, can_run_together, parse
from llamaswap.config.model import MatrixConfig

from .support import load, problems

MODELS = """
models:
  gemma: {cmd: "s ${PORT}"}
  qwen: {cmd: "s ${PORT}"}
  voxtral: {cmd: "s ${PORT}"}
  org/big:model: {cmd: "s ${PORT}"}
"""


def test_matrix_is_parsed_in_order() -> None:
    """Sets keep definition order; vars and costs are stored."""
    config = load(MODELS + """
routing:
  router:
    use: matrix
    settings:
      matrix:
        vars: {g: gemma, big: "org/big:model"}
        evict_costs: {voxtral: 50, big: 30}
        sets:
          zeta: "(g | qwen) & voxtral"
          alpha: "+zeta | big"
  scheduler: {use: fifo}
""")
    matrix = config.routing.router.settings["matrix"]
    assert isinstance(matrix, MatrixConfig)
    assert matrix.sets == (("zeta", "(g | qwen) & voxtral"), ("alpha", "+zeta | big"))
    assert dict(matrix.vars) == {"g": "gemma", "big": "org/big:model"}
    assert dict(matrix.evict_costs) == {"voxtral": 50, "big": 30}


def test_group_router_ignores_matrix() -> None:
    """With use: group an also-present settings.matrix is not validated."""
    config = load(MODELS + """
routing:
  router:
    use: group
    settings:
      matrix: {sets: {bad: "((("}}
""")
    assert config.routing.router.settings["matrix"] is None
    assert config.warnings == ("routing.router.settings.matrix: ignored: routing.router.use is "
                               "'group' (set 'use: matrix' to use it)",)


def test_matrix_use_requires_matrix_settings() -> None:
    """use: matrix without settings.matrix is an error."""
    assert problems(MODELS + "routing: {router: {use: matrix}}\n") == [
        "routing.router.use: is 'matrix' but routing.router.settings.matrix is not set"]


def test_matrix_validation_errors() -> None:
    """Bad vars, costs, and DSL problems are each reported on their key."""
    found = problems(MODELS + """
matrix:
  vars: {bad_name: gemma, x: ghost}
  evict_costs: {gemma: 0, nobody: 3}
  sets:
    empty: "  "
    chars: "gemma ; qwen"
    plus: "gemma & +"
    paren: "(gemma | qwen"
    trailing: "gemma qwen"
    unknown: "gemma & who"
    undefined: "+nowhere"
    loop1: "+loop2"
    loop2: "+loop1"
""")
    assert found == [
        "matrix.vars.bad_name: var key \"bad_name\" must contain only alphanumeric, '-' or '.' "
        "characters and be 1-32 characters long",
        'matrix.vars.x: var key "x" references unknown model "ghost"',
        'matrix.evict_costs.gemma: evict_cost for "gemma" must be a positive integer, got 0',
        'matrix.evict_costs.nobody: unknown var or model "nobody"',
        'matrix.sets.empty: set "empty": empty DSL expression',
        "matrix.sets.chars: set \"chars\": tokenize: unexpected character ';' at position 6",
        "matrix.sets.plus: set \"plus\": tokenize: expected set name after '+' at position 9",
        'matrix.sets.paren: set "paren": parse: missing closing parenthesis',
        'matrix.sets.trailing: set "trailing": parse: unexpected token "qwen" after expression',
        'matrix.sets.unknown: set "unknown": unknown var or model "who"',
        'matrix.sets.undefined: set "undefined" references undefined set "nowhere"',
        'matrix.sets.loop1: circular reference detected involving set "loop1"',
    ]


def test_matrix_needs_a_set() -> None:
    """An empty matrix is an error."""
    assert problems(MODELS + "matrix: {vars: {}}\n") == [
        "matrix.sets: matrix must define at least one set"]


def test_can_run_together() -> None:
    """Targets run together only when one expanded combination holds them all."""
    matrix = MatrixConfig(sets=(("s", "(a | b) & v"), ("t", "+s & e")), vars={"e": "E"})
    assert can_run_together(matrix, frozenset({"a", "v"}))
    assert can_run_together(matrix, frozenset({"b", "v", "E"}))
    assert not can_run_together(matrix, frozenset({"a", "b"}))


idents = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    """Random well-formed DSL expressions."""
    if depth > 2 or draw(st.booleans()):
        return draw(idents)
    op = draw(st.sampled_from([" | ", " & "]))
    parts = draw(st.lists(expressions(depth + 1), min_size=2, max_size=3))
    return "(" + op.join(parts) + ")"


@given(expressions())
def test_well_formed_expressions_parse(expr: str) -> None:
    """Property: every generated expression parses; dropping a ')' never crashes."""
    parse(expr)
    if ")" in expr:
        try:
            parse(expr[:-1])
        except DSLError:
            pass
