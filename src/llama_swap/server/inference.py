"""Inference requests: find the model, get it ready through the router, proxy the request."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from llama_swap.process import ProcessState
from llama_swap.proxy import CANCELLED, UpstreamUnavailable, forward
from llama_swap.routing.router import RouteError
from llama_swap.server.errors import HTTPError
from llama_swap.server.extract import model_from_body, model_from_query
from llama_swap.server.filters import rewrite_request
from llama_swap.server.loading import serve_while_loading, wants_loading_state
from llama_swap.server.service import Service

# Known inference paths: the only values used as the `path` metrics label (bounded
# cardinality), and the `/upstream/` sub-paths that count toward a model's concurrency limit.
INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking",
        "/rerank", "/reranking", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens",
        "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/voices", "/v1/images/generations",
        "/v1/images/edits", "/infill", "/completion", "/completions", "/chat/completions", "/embedding",
        "/embeddings", "/tokenize", "/detokenize", "/apply-template", "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img", "/props", "/slots",
    }
)

SERVICE = web.AppKey("service", Service)
CRASH_NOTICE_SECONDS = 1.0  # how long a failed connection waits to learn whether the upstream died
REPLAY_NOTICE = "[%s] upstream died before answering; restarting it to replay the request"

log = logging.getLogger("llama_swap.server")


async def handle_model_request(request: web.Request) -> web.StreamResponse:
    """Any request outside the management API: routed by the model it names."""
    service = request.app[SERVICE]
    body = await request.read()
    name = model_from_body(request.headers.get("Content-Type", ""), body) or model_from_query(request.query)
    if name is None:
        if body:
            raise HTTPError(400, "missing 'model' field in request body")
        name = _the_running_model(service, request)
    model = service.resolve(name)
    return await serve(
        request, service, model.id, request.raw_path, body, path=request.path, counted=True, requested=name
    )


async def serve(
    request: web.Request,
    service: Service,
    model: str,
    path_qs: str,
    body: bytes,
    *,
    path: str,
    counted: bool,
    requested: str,
) -> web.StreamResponse:
    """Acquire ``model`` (starting or swapping as needed), proxy, and account for it."""
    status = 499  # client went away before an answer; replaced below
    if counted and body:  # inference requests get the model's filters; raw passthrough stays raw
        body = rewrite_request(service.config.models[model], requested, request.headers.get("Content-Type", ""), body)
    tracked = service.activity.begin(
        model, request.method, path, request.headers, request.remote,
        label=path if path in INFERENCE_PATHS else "other",
        metered=request.method == "POST" and path in INFERENCE_PATHS,
    )
    try:
        if _shows_loading(service, model, path, body):
            response, status = await serve_while_loading(
                request, service, model, path_qs, body, requested=requested, tap=tracked
            )
            return response
        replayed = False
        while True:  # one replay at most: an upstream that died before answering is restarted
            lease = await service.router.acquire(model, counted=counted)
            try:
                process = lease.process
                response = await forward(
                    request, service.session, process.base_url + path_qs, body,
                    model=model, tap=tracked, deadlines=process.deadlines,
                )
                status = response.status
                return response
            except UpstreamUnavailable as exc:
                if not replayed and not exc.timed_out and await process.died(within=CRASH_NOTICE_SECONDS):
                    log.warning(REPLAY_NOTICE, model)
                    replayed = True
                    continue  # nothing reached the client yet: it never sees the crash
                status = 502
                tracked.error = str(exc)
                log.warning("[%s] 502 for %s %s: %s", model, request.method, path, exc)
                raise HTTPError(502, str(exc)) from exc
            finally:
                service.router.release(lease)
    except RouteError as exc:  # refused or failed before any answer began
        status = exc.status
        tracked.error = exc.message
        raise _route_error(exc) from exc
    except asyncio.CancelledError:
        if not tracked.cancelled:
            raise  # the client went away
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        status = 503
        raise HTTPError(503, CANCELLED) from None
    finally:
        service.activity.finish(tracked, status)


def _shows_loading(service: Service, model: str, path: str, body: bytes) -> bool:
    config = service.config.models[model]
    return (
        config.send_loading_state is True
        and service.processes[model].state is not ProcessState.READY
        and wants_loading_state(path, body)
    )


def _route_error(exc: RouteError) -> HTTPError:
    return HTTPError(exc.status, exc.message, route_error_headers(exc))


def route_error_headers(exc: RouteError) -> dict[str, str] | None:
    """`Retry-After` for a refusal that will pass later (a full queue, a back-off)."""
    retry_after = exc.retry_after or (1 if exc.status == 429 else None)
    return {"Retry-After": str(retry_after)} if retry_after else None


def _the_running_model(service: Service, request: web.Request) -> str:
    """A request naming no model (e.g. `GET /slots`) goes to the one running model."""
    running = service.router.running()
    if len(running) == 1:
        return running[0]
    where = "none is running" if not running else f"{len(running)} are running: {', '.join(running)}"
    raise HTTPError(
        400,
        f"no model specified for {request.method} {request.path}: add ?model=<id> "
        f"(or a 'model' field in the body); {where}",
    )
