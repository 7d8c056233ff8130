"""The routing summary the UI shows: groups with their rules, or the matrix sets."""

from __future__ import annotations

from llamaswap.config import load_config_text
from llamaswap.observe.events import routing_view

MODELS = """
models:
  a: {cmd: "x --port ${PORT}"}
  b: {cmd: "x --port ${PORT}"}
  c: {cmd: "x --port ${PORT}"}
"""


def test_groups_keep_their_rules_and_skip_empty_ones() -> None:
    """Each group with members is listed with swap/exclusive/persistent; the rest go to default."""
    config = load_config_text(MODELS + """
routing:
  router:
    use: group
    settings:
      groups:
        pair: {swap: false, exclusive: false, persistent: true, members: [a, b]}
  scheduler: {use: fifo}
""")
    view = routing_view(config)
    assert view["router"] == "group" and view["scheduler"] == "fifo"
    groups = {g["id"]: g for g in view["groups"]}
    assert groups["pair"] == {"id": "pair", "swap": False, "exclusive": False,
                              "persistent": True, "members": ["a", "b"]}
    assert groups["(default)"]["members"] == ["c"]
    assert "matrix" not in view


def test_matrix_sets_in_definition_order() -> None:
    """With the matrix router the sets are listed as [name, expression] pairs."""
    config = load_config_text(MODELS + """
routing:
  router:
    use: matrix
    settings:
      matrix:
        sets:
          duo: "a & b"
          solo: "c"
""")
    view = routing_view(config)
    assert view["router"] == "matrix"
    assert view["matrix"]["sets"] == [["duo", "a & b"], ["solo", "c"]]
