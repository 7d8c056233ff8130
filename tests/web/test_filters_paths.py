"""Body filters: sjson-style paths, strip/set order, setParamsByID and useModelName."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from llamaswap.config.model import Filters
from llamaswap.web.filters import (
    FilterError,
    apply_filters,
    delete_path,
    set_path,
    split_path,
    strip_list,
    use_model_name,
)


def test_split_path_escapes() -> None:
    """Unescaped dots split; ``\\.`` stays a literal dot."""
    assert split_path("a.b") == ["a", "b"]
    assert split_path(r"a\.b.c") == ["a.b", "c"]
    assert split_path("top") == ["top"]


def test_set_creates_nested_objects_and_keeps_order() -> None:
    """``a.b`` creates object ``a``; existing keys keep their place, new ones go last."""
    body = {"model": "m", "temperature": 1, "x": 1}
    set_path(body, "temperature", 0.5)
    set_path(body, "chat_template_kwargs.enable_thinking", False)
    assert json.dumps(body) == (
        '{"model": "m", "temperature": 0.5, "x": 1, '
        '"chat_template_kwargs": {"enable_thinking": false}}'
    )


def test_set_array_index() -> None:
    """A numeric component indexes an array; -1 appends."""
    body = {"messages": [{"role": "user"}, {"role": "assistant"}]}
    set_path(body, "messages.1.role", "tool")
    set_path(body, "messages.-1", {"role": "x"})
    assert body["messages"] == [{"role": "user"}, {"role": "tool"}, {"role": "x"}]


def test_set_through_scalar_fails() -> None:
    """Walking through a string is a filter error, not a crash."""
    with pytest.raises(FilterError):
        set_path({"a": [1]}, "a.b", 1)


def test_delete_nested_and_missing() -> None:
    """Deleting removes nested keys; a missing path is a no-op."""
    body = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert delete_path(body, "a.b")
    assert not delete_path(body, "a.zz")
    assert not delete_path(body, "nope.x")
    assert delete_path(body, "l.0")
    assert body == {"a": {"c": 2}, "l": [2]}


def test_strip_list_normalises() -> None:
    """stripParams entries are trimmed, split on commas, deduplicated, sorted, without model."""
    assert strip_list(["top_k, temperature ,model,,top_k"]) == ["temperature", "top_k"]


def test_apply_order_and_by_id() -> None:
    """strip, then setParams, then setParamsByID for the exact requested name; model is kept."""
    filters = Filters(
        strip_params=("temperature", "model"),
        set_params=MappingProxyType({"top_p": 0.9, "model": "evil", "temperature": 0.1}),
        set_params_by_id=MappingProxyType({"fast": MappingProxyType({"top_p": 0.5})}),
    )
    body = {"model": "fast", "temperature": 2.0}
    assert apply_filters(body, filters, "fast")
    assert body == {"model": "fast", "temperature": 0.1, "top_p": 0.5}
    other = {"model": "slow"}
    apply_filters(other, filters, "slow")
    assert other["top_p"] == 0.9


def test_empty_filters_change_nothing() -> None:
    """No configured filter reports no change."""
    body = {"model": "m"}
    assert not apply_filters(body, Filters(), "m")
    assert body == {"model": "m"}


def test_use_model_name() -> None:
    """useModelName replaces the model field; empty leaves it."""
    body = {"model": "alias"}
    assert use_model_name(body, "org/real")
    assert body["model"] == "org/real"
    assert not use_model_name(body, "")
