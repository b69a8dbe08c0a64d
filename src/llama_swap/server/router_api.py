"""llama.cpp's router API for loading and unloading: `POST /models/load` and
`POST /models/unload` with `{"model": "<id or alias>"}`, answered `{"success": true}` as
llama-server's router answers them, on top of our router (as `/upstream/{model}/load` and
`DELETE /upstream/{model}` are). The rest of that API is served elsewhere: the listing
(`/models`, `/v1/models`) by `manage.py`, `/props` by the lane (`router_props.py`).

Unlike llama-server, which answers before the load or unload is done (its web UI then polls
the listing, and calls that a workaround to remove once the answer waits), these answer when
it is done: a client that polls sees the final state at once, and a failed start is an error
answer naming its cause rather than a status to discover.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from llama_swap.config import ModelConfig
from llama_swap.errors import HTTPError, model_not_found
from llama_swap.process import ProcessState
from llama_swap.routing.router import RouteError
from llama_swap.server.request import refusal
from llama_swap.server.responses import cors_headers, json_response
from llama_swap.server.service import SERVICE, Service

SUCCESS = {"success": True}
_RUNNING = (ProcessState.STARTING, ProcessState.READY)


async def load_model(request: web.Request) -> web.Response:
    """Start the model (obeying the groups, as any request would); 400 if it is already
    loaded or loading, as llama-server says "model is already running"."""
    service = request.app[SERVICE]
    model = await _named_model(request, service)
    if service.state_of(model.id) in _RUNNING:
        raise HTTPError(400, f"model '{model.id}' is already running")
    try:
        await service.router.load(model.id)
    except RouteError as exc:
        raise refusal(exc) from None
    return json_response(SUCCESS, headers=cors_headers(request))


async def unload_model(request: web.Request) -> web.Response:
    """Stop the model; 400 if it has no process, as llama-server says "model is not running"."""
    service = request.app[SERVICE]
    model = await _named_model(request, service)
    if service.processes[model.id].pid is None:
        raise HTTPError(400, f"model '{model.id}' is not running")
    await service.router.unload([model.id])
    return json_response(SUCCESS, headers=cors_headers(request))


async def _named_model(request: web.Request, service: Service) -> ModelConfig:
    """The local model the body names: 400 for a body that is not `{"model": "<name>"}` or
    that asks for `extra_args`, 404 for an unknown name."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, 'expected a JSON body {"model": "<id or alias>"}')
    name = body.get("model")
    if name is None:
        raise HTTPError(400, "missing 'model' field in request body")
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "'model' must be a non-empty string")
    if "extra_args" in body:
        raise HTTPError(400, "extra_args is not supported: a model's arguments are its cmd in the config")
    model = service.config.model_for(name)
    if model is not None:
        return model
    peer = service.names.peer_model(name)
    if peer is not None:
        raise HTTPError(400, f"model '{name}' is served by peer '{peer.peer_id}': it is not loaded or unloaded here")
    raise model_not_found(name)


def add_router_routes(app: web.Application) -> None:
    app.router.add_post("/models/load", load_model)
    app.router.add_post("/models/unload", unload_model)
