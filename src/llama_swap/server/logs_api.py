"""GET /logs and /logs/stream[/proxy|/upstream|/{model_id}]: histories, then live lines.

A stream never holds up the service: each reader has its own bounded queue that drops
(and later reports `— N bytes dropped —`) when the reader falls behind, and every stream
ends when the service shuts down.
"""

from __future__ import annotations

from aiohttp import web

from llama_swap.errors import HTTPError
from llama_swap.observe.logbuffer import LogBuffer
from llama_swap.server.service import SERVICE
from llama_swap.server.streaming import pump

_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}


async def get_logs(request: web.Request) -> web.StreamResponse:
    """The combined history (what `logToStdout` sends to stdout); browsers go to the UI."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    history = request.app[SERVICE].logs.combined.history()
    return web.Response(body=history, content_type="text/plain", charset="utf-8")


async def stream_combined(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.app[SERVICE].logs.combined)


async def stream_source(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    source = request.match_info["source"]
    if source == "proxy":
        buffer = service.logs.proxy
    elif source == "upstream":
        buffer = service.logs.upstream
    else:
        model = service.config.model_for(source)
        if model is None:
            raise HTTPError(400, f"invalid model id: {source}")
        buffer = service.logs.model(model.id)
    return await _stream(request, buffer)


async def _stream(request: web.Request, buffer: LogBuffer) -> web.StreamResponse:
    hub = request.app[SERVICE].logs
    history, sub = buffer.subscribe()
    try:
        response = web.StreamResponse(headers=_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        if "no-history" not in request.query and history:
            await response.write(history)
        await pump(request, response, sub, is_closed=lambda: hub.closed)
        return response
    finally:
        sub.unsubscribe()
