"""Per-request accounting: the in-flight list, the activity log and per-request metrics.

Every proxied request is a `Tracked` from `Activity.begin` to `Activity.finish`. While it
runs it is listed (`inflight` events, cancellable by id); the relay hands it each chunk
of the answer, which it counts, times (time to first byte) and meters for token usage as
it passes — nothing is buffered. When it ends, its metrics are recorded and, for an
inference request, an activity row is stored and published.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable, Mapping

import orjson

from llama_swap.observe.captures import Captures, Recording
from llama_swap.observe.events import ACTIVITY, INFLIGHT, EventBus
from llama_swap.observe.metrics import Metrics, ModelSeries
from llama_swap.observe.store import ActivityRow, ActivityStore
from llama_swap.observe.usage import Usage, UsageMeter, meter_for
from llama_swap.wire.headers import RawFields

_NO_USAGE = Usage()
PROGRESS_EVERY = 0.25  # seconds between `inflight` updates of one streaming request
ERROR_BODY = 2048  # bytes of an error answer kept to quote its message
ERROR_MESSAGE = 500  # characters of it shown
CANCELLED = "request cancelled through the llama-swap API"  # POST /api/inflight/{id}/cancel


class Tracked:
    """One request being handled; the relay reports its answer here chunk by chunk."""

    __slots__ = (
        "id", "model", "method", "path", "series", "label", "metered", "session_id", "started", "t0",
        "task", "bytes", "first_byte", "status", "content_type", "meter", "cancelled", "error",
        "_error_body", "_activity", "_published", "_headers", "_remote", "_client", "capture", "selector",
    )

    def __init__(
        self, activity: Activity, req_id: int, model: str, method: str, path: str, series: ModelSeries, *,
        label: str, metered: bool, headers: Mapping[str, str], remote: str | None, session_id: str | None,
    ) -> None:
        self._activity = activity
        self.series = series
        self.id = req_id
        self.model = model
        self.method = method
        self.path = path
        self.label = label  # the `path` label of its metrics
        self.metered = metered  # an inference request: metered and logged as activity
        self._headers = headers  # the client's address is read from them when first shown
        self._remote = remote
        self._client: str | None = None
        self.session_id = session_id
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.task = asyncio.current_task()
        self.bytes = 0
        self.first_byte: float | None = None
        self.status = 0
        self.content_type = ""
        self.meter: UsageMeter | None = None
        self.cancelled = False  # by `POST /api/inflight/{id}/cancel`
        self.error: str | None = None
        self._error_body: bytearray | None = None
        self._published = 0.0
        self.capture: Recording | None = None  # set by `Captures.watch` when captures are on
        self.selector: str | None = None  # set by the lane when a selector chose the model

    def respond(self, status: int, content_type: str, content_encoding: str, headers: RawFields) -> None:
        """The upstream's answer begins (``headers`` as it sent them); decides how its chunks
        are looked at."""
        if self.capture is not None:
            self.capture.resp_headers = headers
        self.status = status
        self.content_type = content_type
        if self.metered:
            self.meter = meter_for(status, content_type, content_encoding)
        if status >= 400:
            self._error_body = bytearray()

    def chunk(self, data: bytes) -> None:
        """A chunk of the answer is being relayed to the client."""
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.bytes += len(data)
        capture = self.capture
        if capture is not None:
            if self.bytes <= capture.limit:
                capture.parts.append(data)
            else:
                self.capture = None  # too large to be kept: its memory goes now
        if self.meter is not None:
            self.meter.feed(data)
        elif self._error_body is not None and len(self._error_body) < ERROR_BODY:
            self._error_body += data[: ERROR_BODY - len(self._error_body)]
        if self._activity.bus.active:
            now = time.monotonic()
            if now - self._published >= PROGRESS_EVERY:
                self._published = now
                self._activity.bus.publish(INFLIGHT, {"operation": "upsert", "request": self.to_json()})

    @property
    def client(self) -> str:
        if self._client is None:
            self._client = client_address(self._headers, self._remote)
        return self._client

    def row(self, row_id: int, status: int, usage: Usage | None, end: float) -> ActivityRow:
        """Its activity-log row (a flat tuple: the log keeps no reference to the request)."""
        usage = usage or _NO_USAGE
        return ActivityRow(
            row_id, self.started, self.model, self.method, self.path, status, self.content_type,
            usage.prompt_tokens, usage.generated_tokens, usage.cached_tokens, usage.draft_tokens,
            usage.accepted_tokens, usage.prompt_per_second, usage.generation_per_second,
            None if self.first_byte is None else round((self.first_byte - self.t0) * 1000, 3),
            round((end - self.t0) * 1000, 3), self.error_message(), self.selector,
        )

    def usage(self) -> Usage | None:
        return self.meter.result() if self.meter is not None else None

    def error_message(self) -> str | None:
        """Why it failed: the service's own reason, or the upstream's error answer."""
        if self.error is not None:
            return self.error[:ERROR_MESSAGE]
        if self.status < 400:
            return None
        return _quoted_error(bytes(self._error_body or b""))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "method": self.method, "path": self.path,
            "started": int(self.started * 1000), "bytes": self.bytes, "client": self.client,
            "session_id": self.session_id,
        }


class Activity:
    """The in-flight requests and the log of finished ones."""

    def __init__(self, bus: EventBus, metrics: Metrics, store: ActivityStore, session_headers: list[str],
                 captures: Captures) -> None:
        self.bus = bus
        self.captures = captures
        self.metrics = metrics
        self.store = store
        self.on_usage: Callable[[str, Usage], None] | None = None  # e.g. warm swaps read cache_n
        self.session_headers = session_headers
        self._inflight: dict[int, Tracked] = {}
        self._ids = itertools.count(1)

    def begin(
        self, model: str, method: str, path: str, headers: Mapping[str, str], remote: str | None,
        *, label: str, metered: bool,
    ) -> Tracked:
        tracked = Tracked(
            self, next(self._ids), model, method, path, self.metrics.series(model), label=label, metered=metered,
            headers=headers, remote=remote, session_id=self._session_id(headers),
        )
        self._inflight[tracked.id] = tracked
        tracked.series.inflight += 1
        if self.bus.active:
            self.bus.publish(INFLIGHT, {"operation": "upsert", "request": tracked.to_json()})
        return tracked

    def finish(self, tracked: Tracked, status: int) -> None:
        """The request is over (answered, failed, cancelled or abandoned): account for it."""
        self._inflight.pop(tracked.id, None)
        end = time.perf_counter()
        series = tracked.series
        series.answered(tracked.label, status)
        series.request_seconds.observe(end - tracked.t0)
        if tracked.first_byte is not None:
            series.first_byte_seconds.observe(tracked.first_byte - tracked.t0)
        usage = tracked.usage()
        if usage is not None:
            series.record_usage(usage)
            if self.on_usage is not None:
                self.on_usage(tracked.model, usage)
        if tracked.metered:
            self._log(tracked, status, usage, end)
        if self.bus.active:
            self.bus.publish(INFLIGHT, {"operation": "remove", "id": tracked.id})
        series.inflight -= 1  # last: once it reads 0, every request is accounted

    def discard(self, tracked: Tracked) -> None:
        """Forget a request handed on to another handler before any answer (it is tracked there)."""
        self._inflight.pop(tracked.id, None)
        if self.bus.active:
            self.bus.publish(INFLIGHT, {"operation": "remove", "id": tracked.id})
        tracked.series.inflight -= 1

    def cancel(self, req_id: int) -> bool:
        """Abort an in-flight request; its client gets an error. False if there is none."""
        tracked = self._inflight.get(req_id)
        if tracked is None or tracked.task is None or tracked.task.done():
            return False
        tracked.cancelled = True
        tracked.error = CANCELLED
        tracked.task.cancel()
        return True

    def inflight(self) -> list[dict[str, Any]]:
        return [tracked.to_json() for tracked in self._inflight.values()]

    def _log(self, tracked: Tracked, status: int, usage: Usage | None, end: float) -> None:
        row = tracked.row(self.store.next_id(), status, usage, end)
        self.store.add(row)
        if tracked.capture is not None:
            self.captures.keep(row.id, tracked.capture, status, tracked.error)
        if self.bus.active:
            self.bus.publish(ACTIVITY, {**row.to_json(), "has_capture": tracked.capture is not None})

    def _session_id(self, headers: Mapping[str, str]) -> str | None:
        for name in self.session_headers:
            value = headers.get(name, "").strip()
            if value:
                return value
        return None


def client_address(headers: Mapping[str, str], remote: str | None) -> str:
    """The client as a reverse proxy in front of us reports it, else the socket's peer."""
    forwarded = headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return forwarded or headers.get("X-Real-IP", "").strip() or remote or ""


def _quoted_error(body: bytes) -> str | None:
    """`error.message`, `error`, `message` or `detail` of a JSON error answer, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:ERROR_MESSAGE] or None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        for candidate in (error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate[:ERROR_MESSAGE]
    return body.decode("utf-8", "replace")[:ERROR_MESSAGE] or None
