"""YAML parsing: YAML 1.2 core scalars, anchors and merges, order, syntax errors."""

from __future__ import annotations

import pytest

from llamaswap.config.errors import ConfigError
from llamaswap.config.yamlio import parse_yaml

from .support import load, one_problem


def test_only_true_false_are_booleans() -> None:
    """yes/no/on/off stay strings; true/True/FALSE are booleans."""
    doc = parse_yaml("a: yes\nb: no\nc: on\nd: off\ne: true\nf: FALSE\ng: y\n", "t")
    assert doc == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": False,
                   "g": "y"}


def test_core_numbers_and_nulls() -> None:
    """Core-schema ints/floats/nulls; sexagesimal and timestamps stay strings."""
    doc = parse_yaml(
        "a: 12\nb: 0x1f\nc: 0o17\nd: 1.5\ne: 1e3\nf: .inf\ng: ~\nh: null\ni: 10:30\n"
        "j: 2001-12-14\nk: '5'\nl: -7\n", "t")
    assert doc["a"] == 12 and doc["b"] == 31 and doc["c"] == 15
    assert doc["d"] == 1.5 and doc["e"] == 1000.0 and doc["f"] == float("inf")
    assert doc["g"] is None and doc["h"] is None
    assert doc["i"] == "10:30" and doc["j"] == "2001-12-14" and doc["k"] == "5"
    assert doc["l"] == -7


def test_anchors_and_merge_keys() -> None:
    """``<<`` merges copy shared blocks into each model, own keys win."""
    config = load("""
        defs:
          base: &base
            proxy: http://127.0.0.1:9000
            ttl: 30
            checkEndpoint: /ready
        models:
          a:
            <<: *base
            cmd: serve a
          b:
            <<: *base
            cmd: serve b
            ttl: 5
    """)
    assert config.models["a"].ttl == 30 and config.models["b"].ttl == 5
    assert config.models["a"].check_endpoint == "/ready"
    assert config.models["b"].proxy == "http://127.0.0.1:9000"


def test_mapping_order_is_preserved() -> None:
    """Mappings keep their written order (macros and matrix sets depend on it)."""
    doc = parse_yaml("z: 1\na: 2\nm: 3\n", "t")
    assert list(doc) == ["z", "a", "m"]


def test_syntax_error_has_line_and_column() -> None:
    """A YAML syntax error names the source, line and column."""
    with pytest.raises(ConfigError) as info:
        load("models:\n  a:\n    cmd: [unclosed\n  b: 1\n", source="cfg.yaml")
    (line,) = info.value.problems
    assert line.startswith("cfg.yaml: YAML syntax error at line ")
    assert "column" in line


def test_duplicate_key_is_an_error() -> None:
    """A key written twice in one mapping is reported with both lines."""
    line = one_problem("models:\n  a:\n    cmd: x ${PORT}\n  a:\n    cmd: y ${PORT}\n")
    assert "mapping key 'a' already defined at line 2" in line
    assert "line 4" in line


def test_top_level_must_be_a_mapping() -> None:
    """A list at the top level is rejected."""
    assert one_problem("- a\n- b\n", source="x.yaml") == (
        "x.yaml: top-level YAML must be a mapping"
    )


def test_empty_document_is_the_default_config() -> None:
    """An empty or comment-only file is a valid config with no models."""
    config = load("# nothing here\n")
    assert dict(config.models) == {}
    assert config.health_check_timeout == 120


def test_merge_chains_are_not_duplicates() -> None:
    """An anchor that itself merges and overrides a key is not a duplicate key."""
    doc = parse_yaml(
        "base: &b {ttl: 1, cmd: x}\n"
        "mid: &m\n  <<: *b\n  ttl: 2\n"
        "top:\n  <<: *m\n  cmd: y\n"
        "again:\n  <<: *m\n", "t")
    assert doc["top"] == {"ttl": 2, "cmd": "y"} and doc["again"] == {"ttl": 2, "cmd": "x"}
    assert doc["mid"] == {"ttl": 2, "cmd": "x"}


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_garbage_collector_as_it_was(enabled: bool) -> None:
    """The collector, paused while a config is built, is as before afterwards, errors too."""
    import gc

    from llamaswap.config.loader import load_config_text

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        load_config_text("models:\n  m:\n    cmd: x ${PORT}\n")
        assert gc.isenabled() is enabled
        with pytest.raises(ConfigError):
            load_config_text("models:\n  m:\n    ttl: -2\n")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
