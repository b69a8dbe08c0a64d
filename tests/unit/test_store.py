"""The activity log's SQLite store: ids, round trips, filters, paging, sorting, pruning, stats."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from llama_swap.observe.store import (
    FLUSH_ROWS,
    SORT_COLUMNS,
    ActivityPage,
    ActivityQuery,
    ActivityRow,
    ActivityStore,
    rfc3339,
)

T0 = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc).timestamp()

# The fields of a row, in the order the API shows them.
FIELDS = (
    "id", "timestamp", "model", "method", "req_path", "resp_status_code", "resp_content_type", "prompt_tokens",
    "generated_tokens", "cached_tokens", "draft_tokens", "accepted_tokens", "prompt_per_second",
    "generation_per_second", "ttfb_ms", "duration_ms", "error_msg",
)

# The Go API's sort keys and the row field each one orders by.
SORT_FIELDS = {
    "id": "id", "time": "timestamp", "model": "model", "req_path": "req_path",
    "resp_status_code": "resp_status_code", "resp_content_type": "resp_content_type",
    "cached": "cached_tokens", "prompt": "prompt_tokens", "generated": "generated_tokens",
    "drafted": "draft_tokens", "prompt_speed": "prompt_per_second", "gen_speed": "generation_per_second",
    "duration": "duration_ms", "ttfb": "ttfb_ms",
}


def make_row(row_id: int, **fields: Any) -> ActivityRow:
    """A complete row, one second after the previous id's, with ``fields`` overridden."""
    values: dict[str, Any] = {
        "id": row_id, "timestamp": T0 + row_id, "model": "m", "method": "POST",
        "req_path": "/v1/chat/completions", "resp_status_code": 200, "resp_content_type": "text/event-stream",
        "prompt_tokens": 10, "generated_tokens": 20, "cached_tokens": 3, "draft_tokens": None,
        "accepted_tokens": None, "prompt_per_second": 100.5, "generation_per_second": 25.25,
        "ttfb_ms": 12.5, "duration_ms": 250.0, "error_msg": None,
    }
    values.update(fields)
    return ActivityRow(**values)


def add_rows(store: ActivityStore, count: int, **fields: Any) -> list[ActivityRow]:
    """Add ``count`` rows with ids handed out by the store, as the service does."""
    rows = [make_row(store.next_id(), **fields) for _ in range(count)]
    for row in rows:
        store.add(row)
    return rows


def ids(store: ActivityStore, **query: Any) -> list[int]:
    return [row.id for row in store.query(ActivityQuery(limit=999, **query)).rows]


@pytest.fixture
def store() -> Iterator[ActivityStore]:
    memory = ActivityStore(None, 100)
    yield memory
    memory.close()


# ---------------------------------------------------------------- ids and round trips


def test_ids_start_at_one_and_continue(store: ActivityStore) -> None:
    assert store.last_id == 0
    assert [store.next_id() for _ in range(3)] == [1, 2, 3]
    assert store.last_id == 3


async def test_rows_round_trip_exactly_including_nones(store: ActivityStore) -> None:
    full = make_row(
        1, timestamp=T0 + 0.123456, model="org/model:Q4", method="POST", req_path="/v1/completions",
        resp_status_code=500, resp_content_type="application/json; charset=utf-8",
        prompt_tokens=1234, generated_tokens=0, cached_tokens=17, draft_tokens=64, accepted_tokens=48,
        prompt_per_second=1234.5678, generation_per_second=0.1, ttfb_ms=0.001, duration_ms=98765.432,
        error_msg="upstream said: “no” ✓",
    )
    empty = make_row(
        2, prompt_tokens=None, generated_tokens=None, cached_tokens=None, draft_tokens=None,
        accepted_tokens=None, prompt_per_second=None, generation_per_second=None, ttfb_ms=None,
        resp_content_type="", error_msg=None,
    )
    store.add(full)
    store.add(empty)
    assert store.query(ActivityQuery()).rows == [empty, full]


async def test_query_sees_rows_added_just_before(store: ActivityStore) -> None:
    add_rows(store, 2)
    assert ids(store) == [2, 1]
    add_rows(store, 1)
    assert ids(store) == [3, 2, 1]


async def test_adding_a_row_with_an_existing_id_replaces_it(store: ActivityStore) -> None:
    store.add(make_row(1, model="old"))
    store.add(make_row(1, model="new"))
    assert [row.model for row in store.query(ActivityQuery()).rows] == ["new"]


# ---------------------------------------------------------------- filters and paging


async def test_newest_first_by_default(store: ActivityStore) -> None:
    add_rows(store, 5)
    assert [row.id for row in store.query(ActivityQuery()).rows] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [6, 5, 4, 3, 2, 1]),
        ({"models": ("a",)}, [4, 1]),
        ({"models": ("a", "c")}, [6, 4, 3, 1]),
        ({"models": ("nope",)}, []),
        ({"start": T0 + 3}, [6, 5, 4, 3]),  # bounds are inclusive
        ({"end": T0 + 2}, [2, 1]),
        ({"start": T0 + 2, "end": T0 + 4}, [4, 3, 2]),
        ({"start": T0 + 2.5, "end": T0 + 2.9}, []),
        ({"min_id": 5}, [6, 5]),
        ({"max_id": 2}, [2, 1]),
        ({"min_id": 2, "max_id": 4}, [4, 3, 2]),
        ({"min_id": 0}, [6, 5, 4, 3, 2, 1]),
        ({"models": ("a", "b"), "min_id": 2, "end": T0 + 5}, [5, 4, 2]),
    ],
)
async def test_filters(store: ActivityStore, query: dict[str, Any], expected: list[int]) -> None:
    for model in "abcabc":
        store.add(make_row(store.next_id(), model=model))
    page = store.query(ActivityQuery(limit=999, **query))
    assert [row.id for row in page.rows] == expected
    assert page.total == len(expected)


@pytest.mark.parametrize(
    ("page", "limit", "expected", "total_pages"),
    [
        (1, 25, [7, 6, 5, 4, 3, 2, 1], 1),
        (1, 3, [7, 6, 5], 3),
        (2, 3, [4, 3, 2], 3),
        (3, 3, [1], 3),
        (4, 3, [], 3),
        (1, 7, [7, 6, 5, 4, 3, 2, 1], 1),
        (2, 1, [6], 7),
    ],
)
async def test_paging(store: ActivityStore, page: int, limit: int, expected: list[int], total_pages: int) -> None:
    add_rows(store, 7)
    result = store.query(ActivityQuery(page=page, limit=limit))
    assert [row.id for row in result.rows] == expected
    assert (result.page, result.limit, result.total) == (page, limit, 7)
    body = result.to_json()
    assert [record["id"] for record in body["data"]] == expected
    assert {key: body[key] for key in ("page", "limit", "total", "total_pages")} == {
        "page": page, "limit": limit, "total": 7, "total_pages": total_pages,
    }


async def test_total_counts_the_filtered_rows_not_the_page(store: ActivityStore) -> None:
    for model in "aabab":
        store.add(make_row(store.next_id(), model=model))
    body = store.query(ActivityQuery(models=("a",), limit=2)).to_json()
    assert [record["id"] for record in body["data"]] == [4, 2]
    assert (body["total"], body["total_pages"]) == (3, 2)


async def test_empty_log_pages(store: ActivityStore) -> None:
    assert store.query(ActivityQuery(page=3, limit=10)).to_json() == {
        "data": [], "page": 3, "limit": 10, "total": 0, "total_pages": 0,
    }


# ---------------------------------------------------------------- sorting

# Ties and nulls in every sortable column, so both the order and the id tie-break show.
SORT_DATA = [
    {"timestamp": T0 + 5, "model": "b", "req_path": "/v1/completions", "resp_status_code": 200,
     "resp_content_type": "text/event-stream", "cached_tokens": 5, "prompt_tokens": None,
     "generated_tokens": 7, "draft_tokens": 3, "prompt_per_second": 50.5, "generation_per_second": None,
     "duration_ms": 30.0, "ttfb_ms": None},
    {"timestamp": T0 + 1, "model": "a", "req_path": "/v1/chat/completions", "resp_status_code": 500,
     "resp_content_type": "application/json", "cached_tokens": None, "prompt_tokens": 9,
     "generated_tokens": 7, "draft_tokens": None, "prompt_per_second": None, "generation_per_second": 12.0,
     "duration_ms": 10.0, "ttfb_ms": 4.0},
    {"timestamp": T0 + 3, "model": "c", "req_path": "/v1/embeddings", "resp_status_code": 200,
     "resp_content_type": "", "cached_tokens": 0, "prompt_tokens": 100, "generated_tokens": None,
     "draft_tokens": 1, "prompt_per_second": 9.25, "generation_per_second": 3.5,
     "duration_ms": 30.0, "ttfb_ms": 1.5},
    {"timestamp": T0 + 1, "model": "a", "req_path": "/v1/chat/completions", "resp_status_code": 404,
     "resp_content_type": "application/json", "cached_tokens": 5, "prompt_tokens": 9, "generated_tokens": 0,
     "draft_tokens": None, "prompt_per_second": 50.5, "generation_per_second": 12.0,
     "duration_ms": 5.5, "ttfb_ms": None},
    {"timestamp": T0 + 9, "model": "B", "req_path": "/rerank", "resp_status_code": 200,
     "resp_content_type": "text/event-stream", "cached_tokens": 2, "prompt_tokens": 1, "generated_tokens": 70,
     "draft_tokens": 3, "prompt_per_second": None, "generation_per_second": 100.0,
     "duration_ms": 100.0, "ttfb_ms": 4.0},
]


def expected_order(field: str, descending: bool) -> list[int]:
    """SQLite's order: nulls below every value, ties broken by id in the same direction."""
    rows = [{"id": index, **data} for index, data in enumerate(SORT_DATA, start=1)]
    rows.sort(key=lambda row: (row[field] is not None, row[field] if row[field] is not None else 0, row["id"]),
              reverse=descending)
    return [row["id"] for row in rows]


def test_sort_keys_are_the_go_apis() -> None:
    assert set(SORT_COLUMNS) == set(SORT_FIELDS)


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("sort", list(SORT_FIELDS))
async def test_every_sort_key_both_ways(store: ActivityStore, sort: str, descending: bool) -> None:
    for data in SORT_DATA:
        store.add(make_row(store.next_id(), **data))
    assert ids(store, sort=sort, descending=descending) == expected_order(SORT_FIELDS[sort], descending)


@pytest.mark.parametrize(
    ("sort", "descending", "expected"),
    [
        ("prompt", False, [1, 5, 2, 4, 3]),  # nulls first going up
        ("prompt", True, [3, 4, 2, 5, 1]),  # and last going down
        ("ttfb", False, [1, 4, 3, 2, 5]),
        ("model", False, [5, 2, 4, 1, 3]),  # binary collation: "B" before "a"
        ("duration", True, [5, 3, 1, 2, 4]),
    ],
)
async def test_sort_examples(store: ActivityStore, sort: str, descending: bool, expected: list[int]) -> None:
    for data in SORT_DATA:
        store.add(make_row(store.next_id(), **data))
    assert ids(store, sort=sort, descending=descending) == expected


async def test_sort_then_page(store: ActivityStore) -> None:
    for data in SORT_DATA:
        store.add(make_row(store.next_id(), **data))
    page = store.query(ActivityQuery(sort="duration", descending=False, limit=2, page=2))
    assert [row.id for row in page.rows] == [1, 3]


# ---------------------------------------------------------------- pruning and persistence


@pytest.mark.parametrize(("keep", "added"), [(3, 5), (3, 3), (3, 1), (1, 4)])
async def test_memory_store_keeps_exactly_the_last_rows(keep: int, added: int) -> None:
    store = ActivityStore(None, keep)
    add_rows(store, added)
    expected = list(range(added, max(0, added - keep), -1))
    page = store.query(ActivityQuery())
    assert [row.id for row in page.rows] == expected
    assert page.total == len(expected)
    store.close()


async def test_memory_store_prunes_across_flushes() -> None:
    store = ActivityStore(None, 4)
    for batch in (3, 2, 4):
        add_rows(store, batch)
        store.flush()
    assert ids(store) == [9, 8, 7, 6]
    store.close()


async def test_lowering_keep_prunes_at_the_next_write() -> None:
    store = ActivityStore(None, 5)
    add_rows(store, 5)
    assert ids(store) == [5, 4, 3, 2, 1]
    store.keep = 2
    assert ids(store) == [5, 4, 3, 2, 1]  # nothing written, nothing pruned
    add_rows(store, 1)
    assert ids(store) == [6, 5]
    store.keep = 4
    add_rows(store, 3)
    assert ids(store) == [9, 8, 7, 6]
    store.close()


async def test_file_store_persists_continues_ids_and_is_not_pruned(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = ActivityStore(path, 2)
    written = add_rows(store, 4)
    store.close()  # closing writes what is still pending

    reopened = ActivityStore(path, 2)
    assert reopened.last_id == 4
    assert reopened.query(ActivityQuery()).rows == written[::-1]
    later = add_rows(reopened, 3)
    assert [row.id for row in later] == [5, 6, 7]
    assert ids(reopened) == [7, 6, 5, 4, 3, 2, 1]
    reopened.close()


async def test_file_store_writes_a_full_batch_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = ActivityStore(path, 10)
    other = sqlite3.connect(path)
    add_rows(store, FLUSH_ROWS - 1)
    assert other.execute("SELECT COUNT(*) FROM activity").fetchone() == (0,)  # still waiting
    add_rows(store, 1)
    assert other.execute("SELECT COUNT(*) FROM activity").fetchone() == (FLUSH_ROWS,)
    other.close()
    store.close()


# ---------------------------------------------------------------- stats


async def test_stats_of_an_empty_log(store: ActivityStore) -> None:
    empty = {"count": 0, "p50": None, "p95": None, "p99": None}
    assert store.stats() == {
        "requests": 0, "prompt_tokens": 0, "generated_tokens": 0, "cached_tokens": 0,
        "prompt_per_second": empty, "generation_per_second": empty,
    }


async def test_stats_totals_ignore_nulls(store: ActivityStore) -> None:
    for prompt, generated, cached in ((10, 1, None), (None, 2, 4), (5, None, 6)):
        store.add(make_row(store.next_id(), prompt_tokens=prompt, generated_tokens=generated, cached_tokens=cached))
    stats = store.stats()
    assert (stats["requests"], stats["prompt_tokens"], stats["generated_tokens"], stats["cached_tokens"]) == (
        3, 15, 3, 10,
    )


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@pytest.mark.parametrize(
    ("speeds", "expected"),
    [
        ([7.0], {"count": 1, "p50": 7.0, "p95": 7.0, "p99": 7.0}),
        ([4.0, 1.0], {"count": 2, "p50": 1.0, "p95": 4.0, "p99": 4.0}),
        ([3.0, 1.0, 2.0, 4.0], {"count": 4, "p50": 2.0, "p95": 4.0, "p99": 4.0}),
        ([5.0, 1.0, 4.0, 2.0, 3.0], {"count": 5, "p50": 3.0, "p95": 5.0, "p99": 5.0}),  # rank ceil(2.5) = 3
        # 1..20 shuffled: ranks ceil(10), ceil(19), ceil(19.8)
        ([float(v) for v in (13, 2, 20, 7, 1, 19, 5, 11, 16, 3, 9, 18, 4, 14, 6, 17, 8, 12, 10, 15)],
         {"count": 20, "p50": 10.0, "p95": 19.0, "p99": 20.0}),
        # 1..200: p99 is the 198th value
        ([float(v) for v in range(200, 0, -1)], {"count": 200, "p50": 100.0, "p95": 190.0, "p99": 198.0}),
    ],
)
async def test_stats_nearest_rank_percentiles(
    store: ActivityStore, speeds: list[float], expected: dict[str, Any]
) -> None:
    store.keep = 1000
    for speed in speeds:
        store.add(make_row(store.next_id(), prompt_per_second=speed, generation_per_second=None))
    store.add(make_row(store.next_id(), prompt_per_second=None, generation_per_second=None))  # ignored
    assert {f"p{p}": nearest_rank(speeds, p) for p in (50, 95, 99)} == {k: expected[k] for k in ("p50", "p95", "p99")}
    stats = store.stats()
    assert stats["prompt_per_second"] == expected
    assert stats["generation_per_second"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert stats["requests"] == len(speeds) + 1


async def test_stats_per_model(store: ActivityStore) -> None:
    for model, prompt, speed in (("a", 1, 10.0), ("b", 20, 200.0), ("a", 3, 30.0), ("c", 400, None)):
        store.add(make_row(store.next_id(), model=model, prompt_tokens=prompt, generation_per_second=speed))
    only_a = store.stats(["a"])
    assert (only_a["requests"], only_a["prompt_tokens"]) == (2, 4)
    assert only_a["generation_per_second"] == {"count": 2, "p50": 10.0, "p95": 30.0, "p99": 30.0}
    a_and_c = store.stats(("a", "c"))
    assert (a_and_c["requests"], a_and_c["prompt_tokens"], a_and_c["generation_per_second"]["count"]) == (3, 404, 2)
    assert store.stats(["nope"])["requests"] == 0
    assert store.stats()["requests"] == 4


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc), "2026-01-31T12:00:00.000Z"),
        (datetime(2026, 1, 31, 12, 0, 0, 123000, tzinfo=timezone.utc), "2026-01-31T12:00:00.123Z"),
        (datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=timezone.utc), "2026-12-01T23:59:59.999Z"),
    ],
)
def test_rfc3339_is_utc_with_milliseconds(moment: datetime, text: str) -> None:
    assert rfc3339(moment.timestamp()) == text


def test_row_to_json() -> None:
    row = make_row(7, timestamp=T0 + 0.25, draft_tokens=4, accepted_tokens=3, error_msg="boom")
    record = row.to_json()
    assert list(record) == list(FIELDS)
    assert record == {**{name: getattr(row, name) for name in FIELDS}, "timestamp": "2026-01-31T12:00:00.250Z"}


def test_page_to_json_rounds_pages_up() -> None:
    row = make_row(1)
    assert ActivityPage([row], page=2, limit=10, total=21).to_json() == {
        "data": [row.to_json()], "page": 2, "limit": 10, "total": 21, "total_pages": 3,
    }


def test_a_row_chosen_by_a_selector_carries_it_as_metadata(store: ActivityStore) -> None:
    row = make_row(store.next_id(), selector="fast")
    store.add(row)
    (stored,) = store.query(ActivityQuery()).rows
    assert stored.selector == "fast"
    assert stored.to_json()["metadata"] == {"selector": "fast"}
    assert "metadata" not in make_row(1).to_json()


async def test_a_file_from_before_the_selector_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "activity.db"
    old = sqlite3.connect(path)
    columns = ", ".join(f"{name}{' INTEGER PRIMARY KEY' if name == 'id' else ''}" for name in FIELDS)
    old.execute(f"CREATE TABLE activity ({columns})")
    old.execute(f"INSERT INTO activity VALUES ({', '.join('?' * len(FIELDS))})", make_row(1)[:len(FIELDS)])
    old.commit()
    old.close()
    reopened = ActivityStore(str(path), 100)
    try:
        reopened.add(make_row(reopened.next_id(), selector="s"))
        rows = reopened.query(ActivityQuery(descending=False)).rows
        assert [(row.id, row.selector) for row in rows] == [(1, None), (2, "s")]
    finally:
        reopened.close()
