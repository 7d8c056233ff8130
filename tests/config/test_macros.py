"""Macros: declaration checks, scopes, order, typed substitution, Go formatting."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from llamaswap.config.gofmt import format_float, format_value
from llamaswap.config.macros import expand, expand_string, model_scope

from .support import load, one_problem, problems


def test_macro_in_macro_and_model_override() -> None:
    """Later macros may use earlier ones; a model macro replaces the global in place."""
    config = load("""
        macros:
          tag: global
          msg: "value-${tag}"
          ctx: 4096
          args: "--ctx ${ctx}"
        models:
          a:
            macros:
              tag: model-level
            cmd: serve ${args} ${msg} --port ${PORT}
          b:
            cmd: serve ${args} ${msg} --port ${PORT}
    """)
    assert config.models["a"].cmd == "serve --ctx 4096 value-model-level --port 5800"
    assert config.models["b"].cmd == "serve --ctx 4096 value-global --port 5801"


def test_forward_reference_is_unknown() -> None:
    """A macro used before it is declared survives and is rejected."""
    found = problems("""
        macros:
          FIRST: "x ${SECOND}"
          SECOND: y
        models:
          m:
            cmd: serve ${FIRST} --port ${PORT}
    """)
    assert found == ["models.m.cmd: unknown macro '${SECOND}'"]


def test_model_id_macro_everywhere() -> None:
    """``${MODEL_ID}`` works in cmd, cmdStop and inside global macros."""
    config = load("""
        macros:
          name: "container-${MODEL_ID}"
        models:
          llama:
            cmd: docker run --name ${name} -p ${PORT}:80
            cmdStop: docker stop ${MODEL_ID}
    """)
    model = config.models["llama"]
    assert model.cmd == "docker run --name container-llama -p 5800:80"
    assert model.cmd_stop == "docker stop llama"


def test_typed_substitution_in_metadata() -> None:
    """An exact ``${x}`` keeps the type; interpolation uses Go %v formatting."""
    config = load("""
        macros:
          temp: 0.7
          big: 1.0
          flag: true
        models:
          m:
            cmd: serve --port ${PORT}
            metadata:
              port: ${PORT}
              temperature: ${temp}
              flag: ${flag}
              text: "t=${temp} b=${big} f=${flag} p=${PORT}"
              nested: ["${temp}", {k: "${MODEL_ID}"}]
    """)
    meta = config.models["m"].metadata
    assert meta["port"] == 5800 and meta["temperature"] == 0.7 and meta["flag"] is True
    assert meta["text"] == "t=0.7 b=1 f=true p=5800"
    assert meta["nested"] == [0.7, {"k": "m"}]


def test_model_macros_do_not_leak() -> None:
    """A model macro is unknown in other models."""
    found = problems("""
        models:
          a:
            macros: {LOCAL: x}
            cmd: serve ${LOCAL} --port ${PORT}
          other:
            cmd: serve ${LOCAL} --port ${PORT}
    """)
    assert found == ["models.other.cmd: unknown macro '${LOCAL}'"]


def test_global_macros_apply_to_top_level_sections() -> None:
    """Global macros reach peers, apiKeys and globalTTL (typed)."""
    config = load("""
        macros:
          key: sk-secret
          ttl: 300
        globalTTL: ${ttl}
        apiKeys: ["${key}"]
        peers:
          p:
            proxy: http://10.0.0.1
            apiKey: ${key}
            models: [m1]
    """)
    assert config.global_ttl == 300
    assert config.api_keys == ("sk-secret",)
    assert config.peers["p"].api_key == "sk-secret"


def test_unknown_macro_in_top_level_section() -> None:
    """A leftover reference outside models names its dotted path."""
    line = one_problem("""
        peers:
          openrouter:
            proxy: https://openrouter.ai/api
            apiKey: ${UNDEFINED_MACRO}
            models: [a]
    """)
    assert line == "peers.openrouter.apiKey: unknown macro '${UNDEFINED_MACRO}'"


def test_declaration_errors() -> None:
    """Bad names, self references, non-scalar values and reserved names are rejected."""
    found = problems("""
        macros:
          "bad name": 1
          selfref: "a ${selfref}"
          alist: [1, 2]
          PORT: 1
          %s: 1
    """ % ("x" * 64))
    assert found == [
        "macros: macro name 'bad name' contains invalid characters, must match pattern "
        "^[a-zA-Z0-9_-]+$",
        "macros: macro 'selfref' contains self-reference",
        "macros: macro 'alist' has invalid type []interface {}, must be a scalar type "
        "(string, int, float, or bool)",
        "macros: macro name 'PORT' is reserved",
        f"macros: macro name '{'x' * 64}' exceeds maximum length of 63 characters",
    ]


def test_model_macro_declaration_errors_have_model_path() -> None:
    """Model macro errors are prefixed with the model's macros path."""
    line = one_problem("""
        models:
          m:
            macros: {MODEL_ID: x}
            cmd: serve --port ${PORT}
    """)
    assert line == "models.m.macros: macro name 'MODEL_ID' is reserved"


def test_pid_only_in_cmd_stop() -> None:
    """``${PID}`` is kept in cmdStop and rejected elsewhere."""
    config = load("""
        models:
          m:
            cmd: serve --port ${PORT}
            cmdStop: kill -TERM ${PID}
    """)
    assert config.models["m"].cmd_stop == "kill -TERM ${PID}"
    line = one_problem("""
        models:
          m:
            cmd: serve --port ${PORT} --pid ${PID}
    """)
    assert line == "models.m.cmd: unknown macro '${PID}'"


def test_comment_lines_in_cmd_never_expand() -> None:
    """Comment lines are stripped from cmd/cmdStop before macros run."""
    config = load("""
        models:
          m:
            cmd: |
              # ${UNKNOWN} in a comment
              serve --port ${PORT}
                # indented comment
              --flag
            cmdStop: |
              # stop it
              kill ${PID}
    """)
    assert config.models["m"].cmd == "serve --port 5800\n--flag\n"
    assert config.models["m"].cmd_stop == "kill ${PID}\n"


def test_go_float_formatting() -> None:
    """Floats print like Go's %v."""
    cases = {1.0: "1", 0.7: "0.7", 1e8: "1e+08", 1e21: "1e+21", 100000.0: "100000",
             1e-5: "1e-05", 0.0001: "0.0001", -2.5: "-2.5", float("inf"): "+Inf"}
    for value, text in cases.items():
        assert format_float(value) == text
    assert format_value(True) == "true" and format_value(16384) == "16384"


scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(alphabet="abc xyz-_/.", max_size=12),
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@given(st.dictionaries(names, scalars, min_size=1, max_size=6))
def test_exact_reference_is_typed(macros: dict[str, object]) -> None:
    """Property: an exact ``${name}`` becomes the macro's value with its type."""
    ordered = list(macros.items())
    for name, value in ordered:
        result = expand_string(f"${{{name}}}", ordered)
        if isinstance(value, str) and "${" in value:
            continue
        assert result == value and type(result) is type(value)


@given(st.dictionaries(names, scalars, min_size=1, max_size=6), st.text(max_size=10))
def test_interpolation_is_go_formatted(macros: dict[str, object], prefix: str) -> None:
    """Property: ``prefix${a}`` interpolates the %v text of every plain scalar macro."""
    ordered = [(n, v) for n, v in macros.items() if not (isinstance(v, str) and "$" in v)]
    prefix = prefix.replace("$", "")
    for name, value in ordered:
        assert expand_string(f"{prefix}<${{{name}}}>", ordered) == (
            f"{prefix}<{format_value(value)}>"
        )


@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=6))
def test_chain_of_macros_expands_fully(values: list[str]) -> None:
    """Property: m_i = "v_i${m_{i-1}}" chains expand completely in declaration order."""
    macros: list[tuple[str, object]] = []
    expected = ""
    for i, value in enumerate(values):
        ref = f"${{m{i - 1}}}" if i else ""
        macros.append((f"m{i}", value + ref))
        expected = value + expected
    result = expand(f"x ${{m{len(values) - 1}}}", macros)
    assert result == "x " + expected
    assert not re.search(r"\$\{", result)


@given(st.lists(st.tuples(names, st.text(alphabet="xyz", max_size=3)), max_size=5),
       st.lists(st.tuples(names, st.text(alphabet="pq", max_size=3)), max_size=5))
def test_model_scope_order(globals_: list[tuple[str, str]], own: list[tuple[str, str]]) -> None:
    """Property: MODEL_ID first, globals in place (overridden by model), then model-only."""
    g = list(dict(globals_).items())
    o = list(dict(own).items())
    scope = model_scope("mid", g, o)
    assert scope[0] == ("MODEL_ID", "mid")
    own_map = dict(o)
    assert scope[1:1 + len(g)] == [(n, own_map.get(n, v)) for n, v in g]
    assert scope[1 + len(g):] == [(n, v) for n, v in o if n not in dict(g)]


def test_unknown_model_keys_are_not_checked_for_macros() -> None:
    """Keys llamaswap does not read may hold anything, like llama-swap ignores them."""
    config = load("""
        models:
          m:
            cmd: s ${PORT}
            x-notes: "uses ${SOMETHING} later"
    """)
    assert config.models["m"].port == 5800
