"""settle_heap: startup objects frozen, young collections rarer, reloads free old cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from llamaswap.gcpolicy import YOUNG_THRESHOLD, settle_heap


class _Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.me: _Node | None = self


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Put the collector back as the test found it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_and_raises_young_threshold() -> None:
    """Objects alive at settle time are frozen; young collections wait for more objects."""
    gc.set_threshold(700, 10, 10)
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_settling_again_frees_cycles_of_the_replaced_app() -> None:
    """A cycle frozen by one settle and dropped afterwards is freed by the next settle."""
    node = _Node()
    ref = weakref.ref(node)
    settle_heap()
    del node
    gc.collect()
    assert ref() is not None  # frozen: ordinary collections skip it
    settle_heap()
    assert ref() is None
