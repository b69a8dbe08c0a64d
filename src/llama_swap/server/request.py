"""One per-request skeleton for every request the service proxies to a model.

From the moment its model is known until its answer ends, a request is *handled*: it is an
in-flight `Tracked` record (cancellable, published to the UI), and when it ends, whichever
way, it is accounted once — status, activity row, metrics. How it ends decides what the
client gets, in one place:
- an answer whose last byte was written: the status the relay reports (`handling.status`);
- refused or failed before any answer (`RouteError`, `HTTPError`): that error, as JSON;
- cancelled by an operator (`POST /api/inflight/{id}/cancel`): 503, or the end of a stream
  already begun (the relay ends it itself);
- the client went away first: 499, nothing to write;
- a bug: 500 if nothing was sent yet, else the connection is closed; logged with its trace.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Mapping

from llama_swap.errors import HTTPError
from llama_swap.observe.activity import CANCELLED, Activity
from llama_swap.routing.router import RouteError
from llama_swap.wire.front import Connection, error_answer

log = logging.getLogger("llama_swap.server")

CLIENT_GONE = 499  # nginx's code for a client that closed the connection before its answer


class Handling:
    """``with Handling(...) as handling:`` around everything a proxied request does."""

    __slots__ = ("tracked", "status", "_activity", "_conn", "_connection")

    def __init__(self, activity: Activity, conn: Connection, model: str, method: str, path: str,
                 headers: Mapping[str, str], label: str, metered: bool, connection: bytes | None) -> None:
        self._activity = activity
        self.tracked = activity.begin(model, method, path, headers, conn.peer, label=label, metered=metered)
        self._conn = conn
        self._connection = connection
        self.status = CLIENT_GONE  # until an answer is given

    def __enter__(self) -> Handling:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None:
            self._activity.finish(self.tracked, self.status)
            return False
        try:
            return self._ended(exc)
        finally:
            self._activity.finish(self.tracked, self.status)

    def _ended(self, exc: BaseException) -> bool:
        """Answer for how the request ended early; True when the exception is dealt with."""
        tracked = self.tracked
        if isinstance(exc, asyncio.CancelledError):
            if not tracked.cancelled:
                return False  # the client went away: 499, and the cancellation goes on
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            self.refuse(503, CANCELLED)
            return True
        if isinstance(exc, RouteError):
            self.refuse(exc.status, exc.message, route_error_headers(exc))
            return True
        if isinstance(exc, HTTPError):
            self.refuse(exc.status, exc.message, exc.headers)
            return True
        if isinstance(exc, Exception):
            log.error("unhandled error for %s %s", tracked.method, tracked.path, exc_info=exc)
            self.refuse(500, f"internal error: {type(exc).__name__}: {exc}")
            return True
        return False

    def refuse(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        """Account for the request as failed, and tell its client if no answer has begun
        (else the connection is closed: a half-sent answer must not pass for whole)."""
        self.status = status
        self.tracked.error = message
        if self._conn.sent:
            self._conn.close()
        else:
            self._conn.write(error_answer(status, message, headers, connection=self._connection))


def refusal(exc: RouteError) -> HTTPError:
    """The router's refusal as the error the service answers (`errorFormat`, `Retry-After`)."""
    return HTTPError(exc.status, exc.message, route_error_headers(exc))


def route_error_headers(exc: RouteError) -> dict[str, str] | None:
    """`Retry-After` for a refusal that will pass later (a full queue, a back-off)."""
    retry_after = exc.retry_after or (1 if exc.status == 429 else None)
    return {"Retry-After": str(retry_after)} if retry_after else None
