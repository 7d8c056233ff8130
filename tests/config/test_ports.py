"""``${PORT}`` allocation: sorted model order, only models whose cmd uses it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from .support import load, one_problem


def test_ports_follow_sorted_model_ids() -> None:
    """The SPEC example: three models from startPort 9000 get 9000, 9001, 9002."""
    config = load("""
        startPort: 9000
        models:
          model2: {cmd: "s --port ${PORT}"}
          author/model:F16: {cmd: "s --port ${PORT}"}
          model1: {cmd: "s --port ${PORT}"}
    """)
    assert {m: c.port for m, c in config.models.items()} == {
        "author/model:F16": 9000, "model1": 9001, "model2": 9002,
    }
    assert config.models["model1"].proxy == "http://localhost:9001"


def test_fixed_port_models_consume_no_port() -> None:
    """A model without ${PORT} in cmd keeps its proxy and port None."""
    config = load("""
        models:
          a: {cmd: "s --port ${PORT}"}
          b: {cmd: "s --port 7000", proxy: "http://127.0.0.1:7000"}
          c: {cmd: "s --port ${PORT}", checkEndpoint: "/h?p=${PORT}", aliases: ["c-${PORT}"]}
    """)
    assert config.models["a"].port == 5800
    assert config.models["b"].port is None and config.models["b"].proxy.endswith(":7000")
    assert config.models["c"].port == 5801
    assert config.models["c"].check_endpoint == "/h?p=5801"
    assert config.aliases["c-5801"] == "c"


def test_port_from_macro_in_cmd() -> None:
    """A macro that contains ${PORT} still allocates a port."""
    config = load("""
        macros:
          server: "llama-server --port ${PORT}"
        startPort: 10001
        models:
          m: {cmd: "${server} -m x.gguf"}
    """)
    assert config.models["m"].cmd == "llama-server --port 10001 -m x.gguf"


def test_start_port_may_be_a_macro() -> None:
    """startPort itself can come from a global macro."""
    config = load("""
        macros: {base: 7100}
        startPort: ${base}
        models:
          m: {cmd: "s ${PORT}"}
    """)
    assert config.start_port == 7100 and config.models["m"].port == 7100


def test_default_proxy_needs_port_in_cmd() -> None:
    """Without ${PORT} in cmd, the default proxy cannot be filled in."""
    line = one_problem("""
        models:
          m: {cmd: "serve --port 8000"}
    """)
    assert line.startswith("models.m.proxy: proxy uses ${PORT} but cmd does not")


def test_port_in_check_endpoint_without_cmd_port() -> None:
    """A ${PORT} left in checkEndpoint says it should have been substituted."""
    line = one_problem("""
        models:
          m: {cmd: "s", proxy: "http://h:1", checkEndpoint: "/x/${PORT}"}
    """)
    assert line.startswith("models.m.checkEndpoint: macro '${PORT}' should have been substituted")


def test_bad_start_port() -> None:
    """startPort below 1 is rejected."""
    assert one_problem("startPort: 0\n") == "startPort: must be between 1 and 65535, got 0"


model_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,10}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(model_ids, st.booleans(), min_size=1, max_size=8),
       st.integers(1, 60000))
def test_port_allocation_property(uses: dict[str, bool], start: int) -> None:
    """Property: users of ${PORT} get start, start+1, ... in byte-wise sorted id order."""
    lines = [f"startPort: {start}", "models:"]
    for model_id, uses_port in uses.items():
        cmd = "s --port ${PORT}" if uses_port else "s --port 1"
        proxy = "" if uses_port else "\n    proxy: http://127.0.0.1:1"
        lines.append(f"  '{model_id}':\n    cmd: '{cmd}'{proxy}")
    config = load("\n".join(lines) + "\n")
    users = sorted((m for m, u in uses.items() if u), key=lambda s: s.encode())
    expected = {m: start + i for i, m in enumerate(users)}
    assert {m: c.port for m, c in config.models.items() if c.port is not None} == expected
    for model_id, port in expected.items():
        assert config.models[model_id].cmd == f"s --port {port}"
