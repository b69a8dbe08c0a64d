"""`GET /api/metrics/activity` query validation, and the `GET /api/models` status records."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from multidict import MultiDict

from llama_swap.config import load_config_text
from llama_swap.errors import HTTPError
from llama_swap.observe.store import SORT_COLUMNS, ActivityQuery
from llama_swap.server.api import MAX_LIMIT, parse_activity_query
from llama_swap.server.listing import status_records

NOON = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc).timestamp()
CMD = "cmd: llama-server --port ${PORT}"


def parse(*pairs: tuple[str, str]) -> ActivityQuery:
    return parse_activity_query(MultiDict(pairs))


# ---------------------------------------------------------------- activity query


def test_defaults() -> None:
    assert parse() == ActivityQuery()
    assert parse() == ActivityQuery(
        models=(), start=None, end=None, min_id=None, max_id=None, limit=25, page=1, sort="id", descending=True
    )


def test_every_parameter() -> None:
    query = parse(
        ("model", "a"), ("start", "2026-01-31T12:00:00Z"), ("end", "2026-01-31T14:30:00.5+01:00"),
        ("min_id", "0"), ("max_id", "99"), ("limit", str(MAX_LIMIT)), ("page", "3"), ("sort", "ttfb"),
        ("order", "asc"),
    )
    assert query == ActivityQuery(
        models=("a",), start=NOON, end=NOON + 3600 * 1.5 + 0.5, min_id=0, max_id=99, limit=999, page=3,
        sort="ttfb", descending=False,
    )


def test_model_repeats_in_order() -> None:
    assert parse(("model", "b"), ("limit", "5"), ("model", "a"), ("model", "org/c:Q4")).models == ("b", "a", "org/c:Q4")


@pytest.mark.parametrize("sort", list(SORT_COLUMNS))
def test_every_sort_key_is_accepted(sort: str) -> None:
    assert parse(("sort", sort)).sort == sort


@pytest.mark.parametrize(("order", "descending"), [("asc", False), ("ASC", False), ("desc", True), ("Desc", True)])
def test_order(order: str, descending: bool) -> None:
    assert parse(("order", order)).descending is descending


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("limit", "1", 1), ("limit", "999", 999), ("limit", "", 25), ("page", "1", 1), ("page", "", 1),
        ("page", "100000", 100000), ("min_id", "0", 0), ("max_id", "", None), ("max_id", "7", 7),
    ],
)
def test_integer_bounds_and_empty_values(name: str, value: str, expected: int | None) -> None:
    assert getattr(parse((name, value)), name) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-31T12:00:00Z", NOON),
        ("2026-01-31T12:00:00.250Z", NOON + 0.25),
        ("2026-01-31T13:00:00+01:00", NOON),
        ("2026-01-31T07:00:00-05:00", NOON),
        ("", None),
    ],
)
@pytest.mark.parametrize("name", ["start", "end"])
def test_times(name: str, value: str, expected: float | None) -> None:
    assert getattr(parse((name, value)), name) == expected


@pytest.mark.parametrize(
    ("name", "value", "detail"),
    [
        ("sort", "bogus", "expected one of id, time, model"),
        ("sort", "ID", "expected one of"),
        ("sort", "", "expected one of"),
        ("sort", "id; DROP TABLE activity", "expected one of"),
        ("order", "up", "expected asc or desc"),
        ("order", "", "expected asc or desc"),
        ("limit", "0", "between 1 and 999"),
        ("limit", "1000", "between 1 and 999"),
        ("limit", "x", "between 1 and 999"),
        ("limit", "-3", "between 1 and 999"),
        ("limit", "2.5", "between 1 and 999"),
        ("page", "0", "at least 1"),
        ("page", "x", "at least 1"),
        ("min_id", "-1", "at least 0"),
        ("min_id", "one", "at least 0"),
        ("max_id", "-1", "at least 0"),
        ("start", "yesterday", "RFC 3339"),
        ("start", "2026-13-01T00:00:00Z", "RFC 3339"),
        ("start", "2026-01-31T12:00:00", "needs a zone"),
        ("end", "2026-01-31T12:00:00", "needs a zone"),
        ("end", "31/01/2026", "RFC 3339"),
    ],
)
def test_invalid_values_are_a_400_naming_the_parameter(name: str, value: str, detail: str) -> None:
    with pytest.raises(HTTPError) as caught:
        parse(("model", "m"), (name, value))
    assert caught.value.status == 400
    assert caught.value.message.startswith(f"invalid {name} '{value.lower() if name == 'order' else value}'")
    assert detail in caught.value.message


def test_first_value_of_a_repeated_scalar_is_used() -> None:
    assert parse(("limit", "5"), ("limit", "0")).limit == 5
    with pytest.raises(HTTPError):
        parse(("limit", "0"), ("limit", "5"))


# ---------------------------------------------------------------- model status records


def test_status_records_of_stopped_models() -> None:
    config = load_config_text(
        "models:\n"
        f"  zeta:\n    {CMD}\n    name: ' Zeta '\n    description: ' the last '\n    ttl: 30\n"
        "    aliases: [z-two, z-one]\n"
        "    capabilities: {in: [text, image], out: [text], tools: true, context: 4096}\n"
        f"  alpha:\n    {CMD}\n    unlisted: true\n"
        f"  Mid:\n    {CMD}\n    capabilities: {{reranker: true}}\n    warmSwap: true\n"
    )
    assert status_records(config, {}, {"Mid": 4096}) == [
        {
            "id": "Mid", "name": "", "description": "", "state": "stopped", "unlisted": False, "peerID": "",
            "aliases": [], "capabilities": ["reranker"], "context_length": None, "ttl": 0, "pid": None,
            "error": None, "warm_cache_bytes": 4096,
        },
        {
            "id": "alpha", "name": "", "description": "", "state": "stopped", "unlisted": True, "peerID": "",
            "aliases": [], "capabilities": [], "context_length": None, "ttl": 0, "pid": None, "error": None,
            "warm_cache_bytes": None,
        },
        {
            "id": "zeta", "name": "Zeta", "description": "the last", "state": "stopped", "unlisted": False,
            "peerID": "", "aliases": ["z-two", "z-one"], "capabilities": ["function_calling", "vision"],
            "context_length": 4096, "ttl": 30, "pid": None, "error": None, "warm_cache_bytes": None,
        },
    ]


def test_status_records_use_the_global_ttl_and_do_not_share_config_lists() -> None:
    config = load_config_text(f"globalTTL: 120\nmodels:\n  m:\n    {CMD}\n    aliases: [a]\n")
    [record] = status_records(config, {}, {})
    assert record["ttl"] == 120
    record["aliases"].append("b")
    assert config.models["m"].aliases == ["a"]
