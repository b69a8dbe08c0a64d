"""Management endpoints: /health, /running, /v1/models, /unload, /metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from llama_swap.process import ProcessState
from llama_swap.server.listing import model_records, routed_records
from llama_swap.server.responses import json_response
from llama_swap.server.service import SERVICE, Service

_HEALTH_STATUS = {
    ProcessState.READY: "running",
    ProcessState.STARTING: "starting",
    ProcessState.STOPPING: "stopping",
    ProcessState.FAILED: "failed",
}


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    models: dict[str, dict[str, Any]] = {}
    for model_id, process in service.processes.items():
        status = _HEALTH_STATUS.get(process.state)
        if status is None:
            continue
        entry: dict[str, Any] = {"status": status, "pid": process.pid}
        if process.state is ProcessState.FAILED:
            entry["error"] = process.last_error
        models[model_id] = entry
    return json_response({"status": "ok", "models": models})


async def running(request: web.Request) -> web.Response:
    return json_response({"running": request.app[SERVICE].router.running()})


def listed_models(service: Service) -> list[dict[str, Any]]:
    """What `GET /v1/models` lists (also Ollama's `/api/tags`), sorted by id."""
    def loaded(model: str) -> bool:
        process = service.processes.get(model)
        return process is not None and process.pid is not None

    data = model_records(service.config, service.created, loaded)
    data += routed_records(service.config, service.names, service.created, loaded)
    data.sort(key=lambda record: record["id"])
    return data


async def list_models(request: web.Request) -> web.Response:
    data = listed_models(request.app[SERVICE])
    origin = request.headers.get("Origin")  # browser UIs list models cross-origin
    return json_response({"object": "list", "data": data}, headers={"Access-Control-Allow-Origin": origin} if origin else None)


async def unload_all_get(request: web.Request) -> web.Response:
    await _unload_all(request.app[SERVICE])
    return json_response({"status": "ok", "message": "all models unloaded"})


async def unload_all_post(request: web.Request) -> web.Response:
    await _unload_all(request.app[SERVICE])
    return json_response({"msg": "ok"})


async def _unload_all(service: Service) -> None:
    await service.router.unload(service.processes)


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.Response(body=service.metrics.render(), headers={"Content-Type": service.metrics.content_type})
