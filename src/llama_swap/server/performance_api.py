"""`GET /api/performance` (the sampler's last hour) and `GET /api/hardware` (the start-up
snapshot), answered as the Go version answers them."""

from __future__ import annotations

from aiohttp import web

from llama_swap.errors import HTTPError
from llama_swap.server.api import time_param
from llama_swap.server.responses import json_response
from llama_swap.server.service import SERVICE


async def performance(request: web.Request) -> web.Response:
    """Samples taken after `?after=<RFC 3339>`, or the whole hour; 503 when disabled."""
    monitor = request.app[SERVICE].performance
    if not monitor.enabled:
        return json_response({"enabled": False}, status=503)
    system, gpus = monitor.samples.since(time_param(request.query, "after"))
    return json_response({"enabled": True, "sys_stats": system, "gpu_stats": gpus})


async def hardware(request: web.Request) -> web.Response:
    probe = request.app[SERVICE].hardware
    snapshot = await probe.snapshot()
    if snapshot is None:
        raise HTTPError(503, f"hardware detection unavailable: {probe.error}")
    return json_response(snapshot)


def add_performance_routes(app: web.Application) -> None:
    app.router.add_get("/api/performance", performance)
    app.router.add_get("/api/hardware", hardware)
