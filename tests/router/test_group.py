"""GroupSwapper: eviction by swap / exclusive / persistent groups (SPEC 2.7, 4.3)."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from llamaswap.config.model import GroupConfig
from llamaswap.interfaces import ISwapper
from llamaswap.router.swapper.group import DEFAULT_GROUP, GroupSwapper


def test_group_no_groups_means_one_model_at_a_time() -> None:
    """Without groups every other running model is evicted."""
    sw = GroupSwapper(None, ["a", "b", "c"])
    assert verifyObject(ISwapper, sw)
    assert sw.eviction_for("a", ["a", "b", "c"]) == ["b", "c"]
    assert sw.groups[DEFAULT_GROUP].members == ("a", "b", "c")


def test_group_swap_false_members_coexist() -> None:
    """Members of a swap: false group do not evict each other."""
    sw = GroupSwapper({"g": {"swap": False, "members": ["a", "b"]}}, ["a", "b"])
    assert sw.eviction_for("a", ["b"]) == []


def test_group_exclusive_evicts_other_groups_but_not_persistent() -> None:
    """An exclusive group evicts other groups' models except persistent ones."""
    groups = {
        "g": GroupConfig(id="g", members=("a", "b")),
        "p": GroupConfig(id="p", swap=False, persistent=True, members=("p1",)),
        "o": GroupConfig(id="o", swap=False, exclusive=False, members=("o1",)),
    }
    sw = GroupSwapper(groups, ["a", "b", "p1", "o1"])
    assert sw.eviction_for("a", ["b", "o1", "p1"]) == ["b", "o1"]


def test_group_non_exclusive_never_evicts_other_groups() -> None:
    """Loading a member of a non-exclusive group leaves other (even exclusive) groups running."""
    groups = {
        "n": {"swap": True, "exclusive": False, "members": ["n1", "n2"]},
        "x": {"members": ["x1"]},
    }
    sw = GroupSwapper(groups, ["n1", "n2", "x1"])
    assert sw.eviction_for("n1", ["n2", "x1"]) == ["n2"]


def test_group_persistent_group_still_swaps_internally() -> None:
    """A persistent swap group evicts its own members."""
    sw = GroupSwapper({"p": {"persistent": True, "members": ["a", "b"]}}, ["a", "b", "c"])
    assert sw.eviction_for("a", ["b", "c"]) == ["b", "c"]
    assert sw.eviction_for("c", ["a", "b"]) == []


def test_group_unassigned_models_join_default_group() -> None:
    """Models in no group form the (default) group, which swaps and is exclusive."""
    sw = GroupSwapper({"g": {"swap": False, "exclusive": False, "members": ["a"]}},
                      ["a", "z", "y"])
    assert sw.groups[DEFAULT_GROUP].members == ("y", "z")
    assert sw.eviction_for("y", ["a", "z"]) == ["a", "z"]


def test_group_unknown_member_is_an_error() -> None:
    """A member that is no model fails with llama-swap's message."""
    with pytest.raises(ValueError, match='no model config for "ghost"'):
        GroupSwapper({"g": {"members": ["ghost"]}}, ["a"])


def test_group_member_in_two_groups_is_an_error() -> None:
    """A model may belong to one group only."""
    with pytest.raises(ValueError, match="used in multiple groups"):
        GroupSwapper({"g": {"members": ["a"]}, "h": {"members": ["a"]}}, ["a"])


def test_group_eviction_keeps_running_order_and_skips_target() -> None:
    """The result keeps the order of ``running`` and never names the target."""
    sw = GroupSwapper(None, ["a", "b", "c"])
    assert sw.eviction_for("b", ["c", "b", "a"]) == ["c", "a"]
    sw.on_swap_start("b", ["c", "a"])


def test_group_running_listed_twice_is_evicted_once() -> None:
    """A model that ``running`` names twice is evicted once, at its first place."""
    sw = GroupSwapper(None, ["a", "b", "c"])
    assert sw.eviction_for("a", ["b", "c", "b", "a", "c"]) == ["b", "c"]
    groups = {"g": {"members": ["a", "b"]}, "h": {"members": ["c"]}}
    sw = GroupSwapper(groups, ["a", "b", "c"])
    assert sw.eviction_for("a", ["c", "b", "c", "b"]) == ["c", "b"]
