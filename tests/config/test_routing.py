"""Routing: router/scheduler choice, groups, the (default) group, legacy keys, warnings."""

from __future__ import annotations

import pytest

from llamaswap.config import ConfigError, load_config_text
from llamaswap.config.model import GroupConfig
from llamaswap.config.routing import SERIAL_WARNING

from .support import load, one_problem, problems

MODELS = """
models:
  a: {cmd: "s ${PORT}"}
  b: {cmd: "s ${PORT}"}
  c: {cmd: "s ${PORT}"}
"""


def test_default_group_holds_every_model() -> None:
    """With no groups all models are in (default): swap and exclusive."""
    config = load(MODELS)
    groups = config.routing.router.settings["groups"]
    assert groups == {"(default)": GroupConfig(id="(default)", members=("a", "b", "c"))}
    assert config.routing.router.settings["matrix"] is None


def test_new_style_groups() -> None:
    """routing.router.settings.groups are parsed with defaults; the rest go to (default)."""
    config = load(MODELS + """
routing:
  router:
    use: group
    settings:
      groups:
        pair: {swap: false, exclusive: false, members: [b, a]}
        solo: {persistent: true, members: []}
      extra: {knob: 1}
  scheduler: {use: fifo}
""")
    settings = config.routing.router.settings
    assert settings["groups"]["pair"] == GroupConfig(
        id="pair", swap=False, exclusive=False, persistent=False, members=("b", "a"))
    assert settings["groups"]["solo"].persistent and settings["groups"]["solo"].swap
    assert settings["groups"]["(default)"].members == ("c",)
    assert settings["extra"] == {"knob": 1}
    assert config.warnings == ()


def test_legacy_groups_are_the_group_router() -> None:
    """Top-level groups behave like routing.router.settings.groups."""
    config = load(MODELS + "groups:\n  g: {members: [a, b]}\n")
    assert config.routing.router.use == "group"
    assert config.routing.router.settings["groups"]["g"].members == ("a", "b")


def test_group_membership_errors() -> None:
    """A member twice in a group or in two groups is an error; unknown ids warn."""
    found = problems(MODELS + """
groups:
  g1: {members: [a, a]}
  g2: {members: [a, ghost]}
""")
    assert found == [
        "groups.g1.members: duplicate model member a found in group: g1",
        "groups.g2.members: model member a is used in multiple groups: g1 and g2",
    ]
    config = load(MODELS + "groups:\n  g: {members: [a, ghost]}\n")
    assert config.warnings == ("groups.g.members: 'ghost' is not a model id; ignored",)


def test_legacy_and_new_router_are_exclusive() -> None:
    """Legacy groups/matrix cannot be combined with routing.router, nor with each other."""
    line = one_problem(MODELS + "groups: {}\nrouting: {router: {use: group}}\n")
    assert line.startswith("routing.router: config uses both the legacy top-level")
    found = problems(MODELS + "groups: {g: {members: [a]}}\nmatrix: {sets: {s: a}}\n")
    assert "config cannot use both 'groups' and 'matrix'" in found


def test_legacy_groups_with_scheduler_block() -> None:
    """routing.scheduler may be combined with legacy groups."""
    config = load(MODELS + "groups: {g: {members: [a]}}\nrouting: {scheduler: {use: fifo}}\n")
    assert config.routing.scheduler.use == "fifo"


def test_unknown_router_lists_installed() -> None:
    """An unknown router name is an error that lists the installed names."""
    line = one_problem(MODELS + "routing: {router: {use: fancy}}\n")
    assert line == 'routing.router.use: unknown router "fancy" (installed: group, matrix)'


def test_third_party_router_and_scheduler() -> None:
    """Any installed plugin name is accepted, settings kept as parsed."""
    config = load(MODELS + """
routing:
  router: {use: fancy, settings: {depth: 3}}
  scheduler: {use: lottery, settings: {lottery: {seed: 7}}}
""", installed_routers={"group", "fancy"}, installed_schedulers={"serial", "lottery"})
    assert config.routing.router.use == "fancy"
    assert config.routing.router.settings["depth"] == 3
    assert config.routing.scheduler.settings_for("lottery") == {"seed": 7}
    assert config.routing.scheduler.settings_for("fifo") == {}


def test_unknown_scheduler_lists_installed() -> None:
    """An unknown scheduler name is an error that lists the installed names."""
    line = one_problem(MODELS + "routing: {scheduler: {use: lifo}}\n")
    assert line == 'routing.scheduler.use: unknown scheduler "lifo" (installed: fifo, serial)'


def test_default_scheduler_must_be_installed() -> None:
    """The default 'serial' is checked too; nothing installed says 'none'."""
    line = one_problem(MODELS, installed_schedulers=set())
    assert line == 'routing.scheduler.use: unknown scheduler "serial" (installed: none)'


def test_discovery_is_used_when_names_are_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without explicit names the loader asks llamaswap.plugins."""
    import llamaswap.plugins as plugins

    monkeypatch.setattr(plugins, "scheduler_factories", lambda: {"only": object()})
    monkeypatch.setattr(plugins, "swapper_factories", lambda: {"group": object()})
    with pytest.raises(ConfigError) as info:
        load_config_text("{}", environ={})
    assert info.value.problems == (
        'routing.scheduler.use: unknown scheduler "serial" (installed: only)',)
    config = load_config_text("routing: {scheduler: {use: only}}", environ={})
    assert config.routing.scheduler.use == "only"


def test_fifo_priority_must_name_models() -> None:
    """fifo.priority keys resolve to a model id or alias."""
    config = load(MODELS + """
routing:
  scheduler: {use: fifo, settings: {fifo: {priority: {a: 10, b: 5}}}}
""")
    assert config.routing.scheduler.settings_for("fifo")["priority"] == {"a": 10, "b": 5}
    line = one_problem(MODELS + """
routing:
  scheduler: {use: fifo, settings: {fifo: {priority: {zz: 1}}}}
""")
    assert line == 'routing.scheduler.settings.fifo.priority.zz: references unknown model "zz"'


def test_serial_warning_when_groups_allow_coexistence() -> None:
    """Groups that let models run together, with no scheduler named, warn once."""
    config = load(MODELS + "groups:\n  g: {swap: false, members: [a, b]}\n"
                  "  h: {exclusive: false, members: [c]}\n")
    assert config.warnings == (SERIAL_WARNING,)
    assert "routing.scheduler.use: fifo" in SERIAL_WARNING
    named = load(MODELS + "groups: {g: {swap: false, members: [a, b]}}\n"
                 "routing: {scheduler: {use: serial}}\n")
    assert named.warnings == ()
    plain = load(MODELS + "groups: {g: {members: [a, b]}}\n")
    assert plain.warnings == ()


def test_serial_warning_for_matrix() -> None:
    """A matrix router with the default scheduler warns."""
    config = load(MODELS + "matrix: {sets: {s: a & b}}\n")
    assert config.routing.router.use == "matrix"
    assert config.warnings == (SERIAL_WARNING,)


def test_reserved_default_group_id() -> None:
    """A user group may not be called (default)."""
    line = one_problem(MODELS + "groups: {'(default)': {members: [a]}}\n")
    assert line == "groups.(default): the group id '(default)' is reserved"


def test_routing_errors_never_escape_as_other_types() -> None:
    """A routing block of the wrong shape is a ConfigError."""
    line = one_problem(MODELS + "routing: [1, 2]\n")
    assert line == "routing: expected a mapping, got a list"
