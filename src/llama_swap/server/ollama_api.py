"""Ollama's model listings: `GET /api/tags`, `GET /api/ps`, `POST /api/show`.

Built from the records `GET /v1/models` lists (unlisted models hidden alike). Ollama's
inference endpoints (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`) are
requests for a model: the lane serves them (`server/lane.py`, `dialects/ollama.py`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from llama_swap.dialects import ollama_models
from llama_swap.errors import HTTPError, model_not_found
from llama_swap.process import group_rss
from llama_swap.server.manage import listed_models
from llama_swap.server.responses import json_response
from llama_swap.server.service import SERVICE, Service


async def tags(request: web.Request) -> web.Response:
    records = listed_models(request.app[SERVICE])
    return json_response({"models": [ollama_models.tag(record) for record in records]})


async def ps(request: web.Request) -> web.Response:
    """The local models whose server is running, with when they are unloaded for being idle."""
    service = request.app[SERVICE]
    now = time.time()
    models = []
    for record in listed_models(service):
        process = service.processes.get(record["id"])
        if process is None or process.pid is None or record["meta"]["llamaswap"].get("type") != "model":
            continue
        size = group_rss(process.pid) or 0  # its own process group: the server and any wrapper
        models.append(ollama_models.running(record, size, service.router.unloads_in(record["id"]), now))
    return json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    """One listed model (by id, alias or `name:latest`); 404 naming it otherwise."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "missing 'model' field in request body")
    record = _find(request.app[SERVICE], name)
    if record is None:
        raise model_not_found(name)
    return json_response(ollama_models.show(record))


def _find(service: Service, name: str) -> dict[str, Any] | None:
    records = {record["id"]: record for record in listed_models(service)}
    for candidate in (name, name.removesuffix(":latest")):
        if candidate in records:
            return records[candidate]
        model = service.config.model_for(candidate)
        if model is not None and model.id in records:
            return records[model.id]
    return None


def add_ollama_routes(app: web.Application) -> None:
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
