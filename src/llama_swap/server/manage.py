"""Management endpoints: /health, /running, /v1/models (and one model), /unload, /metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from llama_swap.errors import model_not_found
from llama_swap.process import ProcessState
from llama_swap.server.listing import model_records, routed_records
from llama_swap.server.responses import cors_headers, json_response
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
    data = _records(service, aliases=None)
    data.sort(key=lambda record: record["id"])
    return data


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models` and `GET /models`: one listing for OpenAI clients and for llama.cpp's
    router clients (the extra fields harm no OpenAI client)."""
    data = listed_models(request.app[SERVICE])
    return json_response({"object": "list", "data": data}, headers=cors_headers(request))


async def retrieve_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{model}`: the record `/v1/models` lists for that id. An alias answers
    the record `includeAliasesInList` would list for it (every name a request may use can be
    looked up); an unlisted model stays hidden (404), as in the listing."""
    name = request.match_info["model"]
    for record in _records(request.app[SERVICE], aliases=True):
        if record["id"] == name:
            return json_response(record, headers=cors_headers(request))
    raise model_not_found(name)


def _records(service: Service, *, aliases: bool | None) -> list[dict[str, Any]]:
    records = model_records(service.config, service.created, service.router_status, aliases=aliases)
    return records + routed_records(service.config, service.names, service.created, service.router_status)


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
