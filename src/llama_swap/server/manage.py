"""Management endpoints: /health, /running, /v1/models, /upstream/..., /unload, /metrics."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aiohttp import web

from llama_swap.config import ModelConfig
from llama_swap.process import ProcessState
from llama_swap.routing.router import RouteError
from llama_swap.server.errors import HTTPError, json_response
from llama_swap.server.inference import INFERENCE_PATHS, SERVICE, serve
from llama_swap.server.listing import model_records
from llama_swap.server.service import Service

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


async def list_models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = model_records(service.config, service.created, loaded=lambda model: service.processes[model].pid is not None)
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


async def upstream(request: web.Request) -> web.StreamResponse:
    """`/upstream/{model}[/path]`: unload (DELETE), load (GET .../load) or raw passthrough."""
    service = request.app[SERVICE]
    model, requested, rest = _split_upstream_path(service, request.raw_path)
    if not rest or rest.startswith("?"):
        if request.method == "DELETE":
            return await _unload_one(service, model)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPMovedPermanently(location=f"/upstream/{model.id}/{rest}")
        raise web.HTTPPermanentRedirect(location=f"/upstream/{model.id}/{rest}")
    path = rest.split("?", 1)[0]
    if path == "/load" and request.method == "GET":
        return await _load(service, model)
    if service.processes[model.id].state is not ProcessState.READY and _ignored(service, path):
        raise HTTPError(409, f"model '{model.id}' is not loaded; {path} does not load it (upstream.ignorePaths)")
    body = await request.read()
    counted = path in INFERENCE_PATHS
    return await serve(request, service, model.id, rest, body, path=path, counted=counted, requested=requested)


def _ignored(service: Service, path: str) -> bool:
    """Static assets a browser fetches from an upstream's UI must not trigger a swap."""
    return any(pattern.search(path) for pattern in service.config.upstream.ignore_patterns)


def _split_upstream_path(service: Service, raw_path: str) -> tuple[ModelConfig, str, str]:
    """Longest configured id or alias after `/upstream/` wins, so `author/model` works."""
    tail = raw_path[len("/upstream/"):]
    path_part = tail.split("?", 1)[0]
    segments = path_part.split("/")
    for end in range(len(segments), 0, -1):
        candidate = "/".join(segments[:end])
        name = unquote(candidate)
        model = service.config.model_for(name)
        if model is not None:
            return model, name, tail[len(candidate):]
    raise HTTPError(404, f"model '{unquote(segments[0])}' not found in config")


async def _unload_one(service: Service, model: ModelConfig) -> web.Response:
    if service.processes[model.id].pid is None:
        return json_response({"status": "error", "message": f"{model.id} is not running"})
    await service.router.unload([model.id])
    return json_response({"status": "ok", "message": f"{model.id} stopped"})


async def _load(service: Service, model: ModelConfig) -> web.Response:
    try:
        await service.router.load(model.id)
    except RouteError as exc:
        return json_response({"status": "error", "message": exc.message}, exc.status)
    return json_response({"status": "ok", "message": f"{model.id} is ready"})
