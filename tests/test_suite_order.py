"""The suite's own ordering (tests/conftest.py): slow tests first, longest first, and under the
README's command (xdist, two tests at a time) the first pair each worker takes is balanced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import SLOW_SECONDS, pytest_collection_modifyitems


@dataclass
class Item:
    name: str
    slow: float | None = None  # None: not marked; 0: marked without a figure
    marks: dict[str, Any] = field(default_factory=dict)

    def get_closest_marker(self, name: str) -> Any:
        if name != "slow" or self.slow is None:
            return None
        return pytest.mark.slow(self.slow).mark if self.slow else pytest.mark.slow.mark


class Config:
    def __init__(self, workers: int | None, chunk: int | None) -> None:
        if workers is not None:
            self.workerinput = {"workercount": workers}
        self.chunk = chunk

    def getoption(self, name: str, default: Any = None) -> Any:
        return self.chunk if name == "maxschedchunk" else default


def order(items: list[Item], workers: int | None = None, chunk: int | None = None) -> list[str]:
    pytest_collection_modifyitems(Config(workers, chunk), items)  # type: ignore[arg-type]
    return [item.name for item in items]


def test_slow_first_longest_first_the_rest_in_their_order() -> None:
    items = [Item("a"), Item("s5", 5), Item("b"), Item("s90", 90), Item("plain", 0),
             Item("c"), Item("s20", 20)]
    assert SLOW_SECONDS == 10.0
    assert order(items) == ["s90", "s20", "plain", "s5", "a", "b", "c"]


def test_under_xdist_in_pairs_each_worker_starts_with_a_long_and_a_short_one() -> None:
    items = [Item(f"s{s}", s) for s in (10, 120, 30, 90, 25, 60, 40, 35, 5)] + [Item("fast")]
    # Two workers, two tests at a time: worker 1 takes the first pair, worker 2 the second.
    assert order(items, workers=2, chunk=2) == ["s120", "s40", "s90", "s60", "s35", "s30",
                                                "s25", "s10", "s5", "fast"]
    # Other chunk sizes (or too few slow tests) keep the plain longest-first order.
    items = [Item(f"s{s}", s) for s in (10, 120, 90)]
    assert order(items, workers=2, chunk=2) == ["s120", "s90", "s10"]
    items = [Item(f"s{s}", s) for s in (10, 120, 90, 60)]
    assert order(items, workers=2, chunk=None) == ["s120", "s90", "s60", "s10"]
