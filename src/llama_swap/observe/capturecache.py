"""A byte-bounded, first-in-first-out cache: the decisions behind `captureBuffer`.

Pure (no clock, no I/O, no compression), so the budget and eviction rules are tested
directly. Keys are activity row ids; each item comes with the bytes it costs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class ByteBoundedFifo(Generic[T]):
    """Items by key, their total cost kept within ``budget`` bytes by dropping the oldest."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        # Age order. Not a dict: popping a dict's oldest key leaves dead slots that every
        # later `next(iter(...))` walks past (~15 µs per eviction at 5 MB of small items).
        self._items: OrderedDict[int, tuple[T, int]] = OrderedDict()

    def add(self, key: int, item: T, cost: int) -> bool:
        """Keep ``item``, evicting the oldest items until it fits; False (nothing evicted)
        when it alone costs more than the whole budget."""
        if cost > self.budget:
            return False
        self.discard(key)
        self._items[key] = (item, cost)
        self.size += cost
        self._evict()
        return True

    def get(self, key: int) -> T | None:
        found = self._items.get(key)
        return None if found is None else found[0]

    def __contains__(self, key: int) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def discard(self, key: int) -> None:
        found = self._items.pop(key, None)
        if found is not None:
            self.size -= found[1]

    def resize(self, budget: int) -> None:
        """A new budget (a reload); the oldest items go until the rest fit."""
        self.budget = budget
        self._evict()

    def _evict(self) -> None:
        items = self._items
        while self.size > self.budget:
            _, (_, cost) = items.popitem(last=False)
            self.size -= cost
