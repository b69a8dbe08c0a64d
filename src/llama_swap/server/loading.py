"""`sendLoadingState`: show a streaming chat client that its model is loading.

For a streamed chat request to a model that is not ready, the answer starts at once:
an SSE stream whose first chunks carry, in `delta.reasoning_content`, which model is
loading, its queue position and the elapsed time. When the model is ready the same
stream continues with the upstream's own events (the one relay's `pump`). A failed load
ends the stream with an error event, which the `openai` client raises.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from llama_swap.proxy import Call, send, unavailable
from llama_swap.routing.router import Lease, RouteError, Router
from llama_swap.server.service import Service
from llama_swap.wire.framing import END_CHUNKS, chunk, head
from llama_swap.wire.front import Connection
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.relay import Tap, pump, sse_error
from llama_swap.wire.upstream import NotSent, UpstreamClosed

TICK = 1.0  # seconds between progress chunks
LOADING_PATHS = frozenset({"/v1/chat/completions"})
_STREAM_FIELDS = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
                  (b"X-Accel-Buffering", b"no")]
_ERROR_DETAIL = 500  # characters of an upstream's error answer quoted in the stream


def wants_loading_state(path: str, body: bytes) -> bool:
    """Only streamed chat completions can show progress in the client's own stream."""
    if path not in LOADING_PATHS:
        return False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


def _progress(model: str, text: str) -> bytes:
    payload = {
        "id": "llama-swap-loading",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": text}, "finish_reason": None}],
    }
    return chunk(b"data: " + orjson.dumps(payload) + b"\n\n")


def _end_with_error(conn: Connection, tap: Tap, message: str, code: int) -> int:
    """Finish the started stream with an error event; the status to account for it."""
    tap.error = message
    conn.write(chunk(sse_error(message, code)) + END_CHUNKS)
    return code


async def serve_while_loading(service: Service, call: Call, request: Incoming, conn: Connection, tap: Tap) -> int:
    """Answer with loading progress until the model is granted, then relay the upstream.

    Returns the status to account for the request (the HTTP status is 200 once the stream
    has begun; a failure is reported inside it).
    """
    router = service.router
    ticket = router.admit(call.model)  # a 429 is a plain error, before the stream starts
    acquiring = asyncio.ensure_future(router.wait(ticket))
    started = time.monotonic()
    try:
        conn.write(head(200, "", _STREAM_FIELDS, chunked=True, connection=request.connection)
                   + _progress(call.requested, f"llama-swap: loading model {call.model}\n"))
        await _report_progress(conn, router, acquiring, call)
        lease = acquiring.result()
    except RouteError as exc:
        return _end_with_error(conn, tap, exc.message, exc.status)
    except BaseException as exc:  # the client went away, or an operator cancelled the request
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            router.release(acquiring.result())
        else:
            acquiring.cancel()
        if isinstance(exc, asyncio.CancelledError) and tap.cancelled:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return _end_with_error(conn, tap, tap.error or "cancelled", 503)
        raise
    try:
        conn.write(_progress(call.requested, f"\nready after {time.monotonic() - started:.2f}s\n\n"))
        return await _continue(service, lease, call, request, conn, tap)
    finally:
        router.release(lease)


async def _report_progress(conn: Connection, router: Router, acquiring: asyncio.Future[Lease], call: Call) -> None:
    """A dot per tick while loading, and a line whenever the queue position changes."""
    shown: int | None = None
    while not acquiring.done():
        await asyncio.wait({acquiring}, timeout=TICK)
        if acquiring.done():
            return
        position = router.queue_position(call.model)
        if position != shown and position is not None:
            text = f"\nwaiting in queue, position {position}\n"
        else:
            text = "."
        shown = position
        conn.write(_progress(call.requested, text))


async def _continue(service: Service, lease: Lease, call: Call, request: Incoming, conn: Connection,
                    tap: Tap) -> int:
    """The upstream's own events, in the stream already begun."""
    try:
        exchange = await send(service.upstreams, lease.process.upstream, call, request, conn, interim=False)
    except (NotSent, UpstreamClosed, TimeoutError) as exc:
        return _end_with_error(conn, tap, unavailable(call, request, exc).message, 502)
    try:
        tap.respond(exchange.status, exchange.raw_content_type, exchange.content_encoding, exchange.raw_headers)
        if exchange.status >= 400:
            detail = b"".join([data async for data in exchange]).decode("utf-8", "replace")[:_ERROR_DETAIL]
            return _end_with_error(conn, tap, f"upstream '{call.model}' answered {exchange.status}: {detail}",
                                   exchange.status)
        return await pump(exchange, conn, tap, chunked=True, sse=True, model=call.model)
    except UpstreamClosed as exc:
        return _end_with_error(conn, tap, unavailable(call, request, exc).message, 502)
    finally:
        exchange.close()
