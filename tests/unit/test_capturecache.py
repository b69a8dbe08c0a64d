"""The capture buffer's budget and eviction rules (`observe/capturecache.py`), driven directly."""

from __future__ import annotations

from llama_swap.observe.capturecache import ByteBoundedFifo


def test_items_are_kept_within_the_budget() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    assert fifo.add(1, "a", 40) and fifo.add(2, "b", 40)
    assert fifo.size == 80 and fifo.get(1) == "a" and 2 in fifo


def test_the_oldest_go_first_until_a_new_item_fits() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    for key in (1, 2, 3):
        fifo.add(key, str(key), 30)
    assert fifo.add(4, "4", 50)  # 90 + 50 > 100: 1 and 2 go, 3 stays
    assert [key for key in (1, 2, 3, 4) if key in fifo] == [3, 4]
    assert fifo.size == 80


def test_an_item_larger_than_the_budget_is_not_kept_and_evicts_nothing() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    fifo.add(1, "a", 60)
    assert not fifo.add(2, "b", 101)
    assert 1 in fifo and 2 not in fifo and fifo.size == 60


def test_an_item_as_large_as_the_budget_replaces_everything() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    fifo.add(1, "a", 10)
    assert fifo.add(2, "b", 100)
    assert len(fifo) == 1 and fifo.size == 100


def test_a_key_added_again_replaces_its_item_and_its_cost() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    fifo.add(1, "a", 60)
    fifo.add(1, "b", 20)
    assert fifo.get(1) == "b" and fifo.size == 20 and len(fifo) == 1


def test_a_smaller_budget_evicts_the_oldest_and_zero_evicts_all() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    for key in (1, 2, 3):
        fifo.add(key, str(key), 30)
    fifo.resize(60)
    assert [key for key in (1, 2, 3) if key in fifo] == [2, 3]
    fifo.resize(0)
    assert len(fifo) == 0 and fifo.size == 0
    assert not fifo.add(4, "4", 1)


def test_missing_keys() -> None:
    fifo: ByteBoundedFifo[str] = ByteBoundedFifo(100)
    assert fifo.get(7) is None and 7 not in fifo
    fifo.discard(7)
    assert fifo.size == 0
