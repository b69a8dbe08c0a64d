"""The llama-swap API under /api: models, events, activity, in-flight requests, version."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from multidict import MultiMapping

from llama_swap import __version__
from llama_swap.errors import HTTPError
from llama_swap.observe.events import (
    INFLIGHT,
    LOG_DATA,
    MODEL_STATUS,
    PROFILE_CHANGED,
    RESYNC,
    UI_CONFIG,
    frame,
)
from llama_swap.observe.store import SORT_COLUMNS, ActivityQuery
from llama_swap.server.responses import json_response
from llama_swap.server.service import SERVICE, Service
from llama_swap.server.streaming import pump

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
MAX_LIMIT = 999


async def models(request: web.Request) -> web.Response:
    """Every model with its live state (the `modelStatus` event's list)."""
    return json_response(request.app[SERVICE].model_status())


async def unload_model(request: web.Request) -> web.Response:
    """`POST /api/models/unload/{model}`: stop one model (id or alias; ids may hold `/`)."""
    service = request.app[SERVICE]
    model = service.resolve(request.match_info["model"])
    await service.router.unload([model.id])
    return json_response({"msg": "ok"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot of everything, then changes as they happen."""
    service = request.app[SERVICE]
    burst = b"".join(
        [
            frame(LOG_DATA, {"source": "proxy", "data": service.logs.proxy.history().decode("utf-8", "replace")}),
            frame(LOG_DATA, {"source": "upstream", "data": service.logs.upstream.history().decode("utf-8", "replace")}),
            _snapshot(service),
            frame(UI_CONFIG, {"version": __version__, "sessionIdHeaders": service.config.ui.activity.session_id}),
            frame(PROFILE_CHANGED, {"active": service.names.active}),
        ]
    )
    sub = service.events.subscribe()
    try:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        await response.write(burst)

        def resync(chunk: bytes) -> bytes:
            """A reader that fell behind gets the current state in place of what it missed."""
            return _snapshot(service) if chunk == RESYNC else chunk

        await pump(request, response, sub, is_closed=lambda: service.logs.closed, replace=resync)
        return response
    finally:
        sub.unsubscribe()


def _snapshot(service: Service) -> bytes:
    return frame(MODEL_STATUS, service.model_status()) + frame(
        INFLIGHT, {"operation": "snapshot", "requests": service.activity.inflight()}
    )


async def activity(request: web.Request) -> web.Response:
    """A page of the activity log, filtered and sorted as asked; each row says whether it
    has a capture (`has_capture`), as the Go version overlays it."""
    query = parse_activity_query(request.query)
    service = request.app[SERVICE]
    page = service.activity.store.query(query).to_json()
    for row in page["data"]:
        row["has_capture"] = service.captures.has(row["id"])
    return json_response(page)


async def capture(request: web.Request) -> web.Response:
    """`GET /api/captures/{id}`: the request and answer of activity row ``id``, if still kept."""
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()):
        raise HTTPError(400, "invalid capture ID")
    found = request.app[SERVICE].captures.get(int(raw))
    if found is None:
        raise HTTPError(404, "capture not found")
    return json_response(found)


async def stats(request: web.Request) -> web.Response:
    """Totals and speed percentiles, for all models or those named by `?model=`."""
    return json_response(request.app[SERVICE].activity.store.stats(request.query.getall("model", [])))


async def inflight(request: web.Request) -> web.Response:
    return json_response({"requests": request.app[SERVICE].activity.inflight()})


async def cancel_inflight(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or not request.app[SERVICE].activity.cancel(int(raw)):
        raise HTTPError(404, f"no in-flight request with id {raw}")
    return json_response({"msg": "ok"})


async def version(request: web.Request) -> web.Response:
    return json_response({"version": __version__, "commit": "unknown", "build_date": "unknown"})


def parse_activity_query(params: MultiMapping[str]) -> ActivityQuery:
    """Validate `GET /api/metrics/activity`'s query; a bad value is a 400 naming it."""
    sort = params.get("sort", "id")
    if sort not in SORT_COLUMNS:
        raise HTTPError(400, f"invalid sort '{sort}': expected one of {', '.join(SORT_COLUMNS)}")
    order = params.get("order", "desc")
    if order.lower() not in ("asc", "desc"):
        raise HTTPError(400, f"invalid order '{order}': expected asc or desc")
    return ActivityQuery(
        models=tuple(params.getall("model", [])),
        start=time_param(params, "start"),
        end=time_param(params, "end"),
        min_id=_capped(_integer(params, "min_id", 0), _SQLITE_MAX),
        max_id=_capped(_integer(params, "max_id", 0), _SQLITE_MAX),
        limit=_integer(params, "limit", 1, MAX_LIMIT) or 25,
        page=min(_integer(params, "page", 1) or 1, _SQLITE_MAX // MAX_LIMIT),
        sort=sort,
        descending=order.lower() == "desc",
    )


# SQLite's largest integer. A larger id, or a page whose row offset is larger, fails to bind
# (OverflowError, a 500); capped, they select what they mean: nothing, or everything.
_SQLITE_MAX = 2**63 - 1


def _capped(value: int | None, high: int) -> int | None:
    return value if value is None else min(value, high)


def _integer(params: MultiMapping[str], name: str, low: int, high: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HTTPError(400, f"invalid {name} '{raw}': must be an integer {bounds}")
    return value


def time_param(params: MultiMapping[str], name: str) -> float | None:
    """An RFC 3339 query parameter as epoch seconds (None when absent); a bad one is a 400 naming it."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, f"invalid {name} '{raw}': expected an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise HTTPError(400, f"invalid {name} '{raw}': the time needs a zone (Z or +01:00)")
    return moment.timestamp()


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/models/unload/{model:.+}", unload_model)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/metrics/activity", activity)
    app.router.add_get("/api/metrics/stats", stats)
    app.router.add_get("/api/captures/{id}", capture)
    app.router.add_get("/api/inflight", inflight)
    app.router.add_post("/api/inflight/{id}/cancel", cancel_inflight)
    app.router.add_get("/api/version", version)

