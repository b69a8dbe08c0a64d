"""`sendLoadingState`: show a streaming chat client that its model is loading.

For a streamed chat request to a model that is not ready, the answer starts at once:
an SSE stream whose first chunks carry, in `delta.reasoning_content`, which model is
loading, its queue position and the elapsed time. When the model is ready the same
stream continues with the upstream's own events. A failed load ends the stream with an
error event, which the `openai` client raises.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from llama_swap.proxy import CANCELLED, Tap, UpstreamUnavailable, end_stream_with_error, open_upstream, relay
from llama_swap.routing.router import Lease, RouteError, Router
from llama_swap.server.service import Service

TICK = 1.0  # seconds between progress chunks
LOADING_PATHS = frozenset({"/v1/chat/completions"})


def wants_loading_state(path: str, body: bytes) -> bool:
    """Only streamed chat completions can show progress in the client's own stream."""
    if path not in LOADING_PATHS:
        return False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


def _chunk(model: str, text: str) -> bytes:
    payload = {
        "id": "llama-swap-loading",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def serve_while_loading(
    request: web.Request,
    service: Service,
    model: str,
    path_qs: str,
    body: bytes,
    *,
    requested: str,
    tap: Tap,
) -> tuple[web.StreamResponse, int]:
    """Answer with loading progress until ``model`` is granted, then relay the upstream.

    Returns the response and the status to account for it (the HTTP status is 200 once
    the stream has begun; a failure is reported inside it).
    """
    ticket = service.router.admit(model)  # a 429 is a plain error, before the stream starts
    acquiring = asyncio.ensure_future(service.router.wait(ticket))
    started = time.monotonic()
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    try:
        await response.prepare(request)
        await response.write(_chunk(requested, f"llama-swap: loading model {model}\n"))
        await _report_progress(response, service.router, acquiring, model, requested)
        lease = acquiring.result()
    except RouteError as exc:
        return await end_stream_with_error(response, exc.message, exc.status), exc.status
    except BaseException as exc:  # the client went away, or an operator cancelled the request
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            service.router.release(acquiring.result())
        else:
            acquiring.cancel()
        if isinstance(exc, asyncio.CancelledError) and tap.cancelled:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return await end_stream_with_error(response, CANCELLED, 503), 503
        raise
    try:
        await response.write(_chunk(requested, f"\nready after {time.monotonic() - started:.2f}s\n\n"))
        return await _relay_upstream(request, response, service, lease, path_qs, body, model, tap)
    finally:
        service.router.release(lease)


async def _report_progress(
    response: web.StreamResponse, router: Router, acquiring: asyncio.Future[Lease], model: str, requested: str
) -> None:
    """A dot per tick while loading, and a line whenever the queue position changes."""
    shown: int | None = None
    while not acquiring.done():
        await asyncio.wait({acquiring}, timeout=TICK)
        if acquiring.done():
            return
        position = router.queue_position(model)
        if position != shown and position is not None:
            text = f"\nwaiting in queue, position {position}\n"
        else:
            text = "."
        shown = position
        await response.write(_chunk(requested, text))


async def _relay_upstream(
    request: web.Request,
    response: web.StreamResponse,
    service: Service,
    lease: Lease,
    path_qs: str,
    body: bytes,
    model: str,
    tap: Tap,
) -> tuple[web.StreamResponse, int]:
    url = lease.process.base_url + path_qs
    try:
        async with open_upstream(
            request, service.session, url, body, model=model, deadlines=lease.process.deadlines
        ) as upstream:
            if upstream.status >= 400:
                detail = (await upstream.text(errors="replace"))[:500]
                message = f"upstream '{model}' answered {upstream.status}: {detail}"
                return await end_stream_with_error(response, message, upstream.status), upstream.status
            await relay(upstream, response, request, model=model, tap=tap)
            return response, upstream.status
    except UpstreamUnavailable as exc:
        return await end_stream_with_error(response, str(exc), 502), 502
