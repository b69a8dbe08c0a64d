"""The activity log: one row per inference request, in SQLite (a file, or in memory).

A request never waits on the database. With a `store.path` file, rows are written in small
batches a moment after they arrive and kept across restarts, as the Go llama-swap's are. In
memory (the default) the log is the last `metricsMaxInMemory` rows and they are only written
to SQLite when someone asks for them: until then a row costs one list append, and rows that
would be pruned anyway are dropped before they are ever written.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

FLUSH_DELAY = 1.0  # seconds rows wait before they are written together (queries flush first)
FLUSH_ROWS = 500  # or this many, whichever comes first


class ActivityRow(NamedTuple):
    """One finished request, as `GET /api/metrics/activity` and the `activity` event show it.

    Token counts and speeds are None where the upstream reported nothing. A tuple, so that
    it goes to SQLite as it is.
    """

    id: int
    timestamp: float  # when the request arrived, seconds since the epoch
    model: str
    method: str
    req_path: str
    resp_status_code: int
    resp_content_type: str
    prompt_tokens: int | None
    generated_tokens: int | None
    cached_tokens: int | None
    draft_tokens: int | None
    accepted_tokens: int | None
    prompt_per_second: float | None
    generation_per_second: float | None
    ttfb_ms: float | None
    duration_ms: float
    error_msg: str | None
    selector: str | None = None  # the selector that chose the model, if one did

    def to_json(self) -> dict[str, Any]:
        record = self._asdict()
        record["timestamp"] = rfc3339(self.timestamp)
        selector = record.pop("selector")
        if selector is not None:
            record["metadata"] = {"selector": selector}  # as llama-swap's rows carry it
        return record


_COLUMNS = ", ".join(ActivityRow._fields)

# Sort keys of the Go API, mapped to columns.
SORT_COLUMNS = {
    "id": "id", "time": "timestamp", "model": "model", "req_path": "req_path",
    "resp_status_code": "resp_status_code", "resp_content_type": "resp_content_type",
    "cached": "cached_tokens", "prompt": "prompt_tokens", "generated": "generated_tokens",
    "drafted": "draft_tokens", "prompt_speed": "prompt_per_second", "gen_speed": "generation_per_second",
    "duration": "duration_ms", "ttfb": "ttfb_ms",
}


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _column_type(hint: Any) -> str:
    """`int | None` → INTEGER: the SQLite type of a row field."""
    base = typing.get_args(hint)[0] if typing.get_args(hint) else hint
    return {int: "INTEGER", float: "REAL", str: "TEXT"}[base]


@dataclass(frozen=True)
class ActivityQuery:
    """A validated `GET /api/metrics/activity` query."""

    models: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    min_id: int | None = None
    max_id: int | None = None
    limit: int = 25
    page: int = 1
    sort: str = "id"
    descending: bool = True


@dataclass(frozen=True)
class ActivityPage:
    rows: list[ActivityRow]
    page: int
    limit: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {
            "data": [row.to_json() for row in self.rows],
            "page": self.page,
            "limit": self.limit,
            "total": self.total,
            "total_pages": math.ceil(self.total / self.limit),
        }


class ActivityStore:
    """SQLite behind the activity log; used from the event loop's thread only."""

    def __init__(self, path: str | None, keep: int) -> None:
        self.path = path
        self.keep = keep  # rows kept in memory; a file keeps everything
        self._db = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(
            f"{name} {_column_type(kind)}{' PRIMARY KEY' if name == 'id' else ''}"
            for name, kind in typing.get_type_hints(ActivityRow).items()
        )
        self._db.execute(f"CREATE TABLE IF NOT EXISTS activity ({columns})")
        self._add_missing_columns()
        if path:  # a file grows without bound; a thousand rows in memory are scanned faster than indexed
            self._db.execute("CREATE INDEX IF NOT EXISTS activity_model ON activity (model, id)")
            self._db.execute("CREATE INDEX IF NOT EXISTS activity_time ON activity (timestamp)")
        (last,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM activity").fetchone()
        self.last_id: int = last
        self._pending: list[ActivityRow] = []
        self._flush_timer: asyncio.TimerHandle | None = None

    def _add_missing_columns(self) -> None:
        """A file written by an earlier version lacks the columns added since: add them (empty)."""
        present = {name for _, name, *_ in self._db.execute("PRAGMA table_info(activity)")}
        for name, kind in typing.get_type_hints(ActivityRow).items():
            if name not in present:
                self._db.execute(f"ALTER TABLE activity ADD COLUMN {name} {_column_type(kind)}")

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def add(self, row: ActivityRow) -> None:
        """Queue ``row``: a file gets it within `FLUSH_DELAY` seconds, memory at the next query."""
        pending = self._pending
        pending.append(row)
        if not self.path:
            if len(pending) > 2 * self.keep:
                del pending[: -self.keep]  # older than the last `keep`: pruned anyway
        elif len(pending) >= FLUSH_ROWS:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        placeholders = ", ".join("?" * len(ActivityRow._fields))
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO activity ({_COLUMNS}) VALUES ({placeholders})", rows)
            if not self.path:
                self._db.execute("DELETE FROM activity WHERE id <= ?", (self.last_id - self.keep,))

    def query(self, query: ActivityQuery) -> ActivityPage:
        self.flush()
        where, params = _where(query)
        (total,) = self._db.execute(f"SELECT COUNT(*) FROM activity{where}", params).fetchone()
        order = "DESC" if query.descending else "ASC"
        column = SORT_COLUMNS[query.sort]
        tiebreak = "" if column == "id" else f", id {order}"
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM activity{where} ORDER BY {column} {order}{tiebreak} LIMIT ? OFFSET ?",
            (*params, query.limit, (query.page - 1) * query.limit),
        )
        return ActivityPage([ActivityRow(*values) for values in cursor], query.page, query.limit, total)

    def stats(self, models: Iterable[str] = ()) -> dict[str, Any]:
        """Totals and speed percentiles, over all rows or those of ``models``."""
        self.flush()
        where, params = _where(ActivityQuery(models=tuple(models)))
        requests, prompt, generated, cached = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(generated_tokens), 0),"
            f" COALESCE(SUM(cached_tokens), 0) FROM activity{where}",
            params,
        ).fetchone()
        return {
            "requests": requests,
            "prompt_tokens": prompt,
            "generated_tokens": generated,
            "cached_tokens": cached,
            "prompt_per_second": self._percentiles("prompt_per_second", where, params),
            "generation_per_second": self._percentiles("generation_per_second", where, params),
        }

    def _percentiles(self, column: str, where: str, params: list[Any]) -> dict[str, float | int | None]:
        condition = f"{where} AND {column} IS NOT NULL" if where else f" WHERE {column} IS NOT NULL"
        values = [v for (v,) in self._db.execute(f"SELECT {column} FROM activity{condition} ORDER BY {column}", params)]
        return {"count": len(values), **{f"p{p}": _percentile(values, p) for p in (50, 95, 99)}}

    def close(self) -> None:
        self.flush()
        self._db.close()


def _percentile(ordered: list[float], p: int) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _where(query: ActivityQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.models:
        clauses.append(f"model IN ({', '.join('?' * len(query.models))})")
        params.extend(query.models)
    for clause, value in (
        ("timestamp >= ?", query.start), ("timestamp <= ?", query.end),
        ("id >= ?", query.min_id), ("id <= ?", query.max_id),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
