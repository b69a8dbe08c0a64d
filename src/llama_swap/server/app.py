"""The aiohttp application: the management API, the UI, logs, events and docs.

Requests for a model never reach it: the front hands a request to this app only when its
route table has a route for it (`app_routes`); the lane (`server/lane.py`) serves the rest.
"""

from __future__ import annotations

import logging
import re
from typing import Awaitable, Callable

from aiohttp import web

from llama_swap import __version__
from llama_swap.config import Config
from llama_swap.errors import HTTPError
from llama_swap.redact import use_secrets
from llama_swap.server import logs_api, manage
from llama_swap.server.api import add_api_routes
from llama_swap.server.auth import check_key, is_open, quiet_bad_requests, target_problem
from llama_swap.server.docs import add_docs_routes
from llama_swap.server.ollama_api import add_ollama_routes
from llama_swap.server.performance_api import add_performance_routes
from llama_swap.server.profiles_api import add_profile_routes
from llama_swap.server.responses import error_response
from llama_swap.server.router_api import add_router_routes
from llama_swap.server.service import SERVICE, Service
from llama_swap.server.ui import add_ui_routes

log = logging.getLogger("llama_swap.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_DEFAULT_ALLOWED = "Accept, Authorization, Content-Type, Origin, X-Requested-With, X-Api-Key"
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9-]+$")


def _preflight(request: web.Request) -> web.Response:
    """Answer a browser's CORS preflight for any path, so web UIs can call the API."""
    asked = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    allowed = ", ".join(h for h in asked if _HEADER_TOKEN.match(h)) or _DEFAULT_ALLOWED
    return web.Response(status=204, headers={**_PREFLIGHT_HEADERS, "Access-Control-Allow-Headers": allowed})


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware (each layer costs every request): CORS preflights, `admission`,
    then the handler — and every error the service itself produces is JSON; a bug answers
    500, never crashes."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(request)
    try:
        refused = admission(request)
        return refused if refused is not None else await handler(request)
    except HTTPError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPRedirection:
        raise
    except web.HTTPRequestEntityTooLarge:  # a body without Content-Length outgrew the limit while read
        return too_large(request, None)
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason)
    except ConnectionError:
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the client went away: aiohttp drops this without a word
        raise
    except Exception as exc:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def admission(request: web.Request) -> web.Response | None:
    """Access control (server/auth.py), then the request's own checks: a proxiable target
    (400) and the body size limit (413, before reading when the size is announced). None
    lets it through. The settings are read per request, so a reload applies at once."""
    config = request.app[SERVICE].config
    if config.api_keys and not is_open(request):
        refused = check_key(request, config.api_keys)
        if refused is not None:
            return refused
    problem = target_problem(request.raw_path)
    if problem is not None:
        return error_response(400, f"invalid request target: {problem}")
    limit = config.max_body_bytes
    if request.client_max_size != limit:
        request._client_max_size = limit  # aiohttp's own check while reading; no public setter
    if request.content_length is not None and request.content_length > limit:
        return too_large(request, request.content_length)
    return None


def too_large(request: web.Request, size: int | None) -> web.Response:
    """413 naming the limit and the key that sets it."""
    limit_mb = request.client_max_size >> 20
    what = f"{size} bytes exceeds" if size is not None else "it exceeds"
    return error_response(413, f"request body too large: {what} the {limit_mb} MiB limit (maxBodyMB)")


def build_app(config: Config, *, use_reaper: bool = True) -> web.Application:
    """The service as an aiohttp app; the `Service` lives from start-up to cleanup."""
    # auto_decompress=False: a management request's body is read as sent, never inflated
    # here (a body that failed to decode was an internal 500).
    app = web.Application(
        middlewares=[front], client_max_size=config.max_body_bytes, handler_args={"auto_decompress": False}
    )
    use_secrets(config.api_keys)
    quiet_bad_requests()

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        service = Service(config, use_reaper=use_reaper)
        app[SERVICE] = service
        service.start_background()
        yield
        await service.close()

    async def end_streams(app: web.Application) -> None:
        app[SERVICE].end_streams()  # before the graceful drain, which would wait for them

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    add_ui_routes(app)
    app.router.add_get("/health", manage.health)
    app.router.add_get("/wol-health", manage.health)  # the Go version's probe for its wake-on-LAN proxy
    app.router.add_get("/running", manage.running)
    app.router.add_get("/v1/models", manage.list_models)
    app.router.add_get("/models", manage.list_models)
    app.router.add_get("/v1/models/{model:.+}", manage.retrieve_model)
    add_router_routes(app)
    app.router.add_get("/unload", manage.unload_all_get)
    app.router.add_post("/api/models/unload", manage.unload_all_post)
    app.router.add_get("/metrics", manage.metrics)
    add_api_routes(app)
    add_ollama_routes(app)
    add_profile_routes(app)
    add_performance_routes(app)
    app.router.add_get("/logs", logs_api.get_logs)
    app.router.add_get("/logs/stream", logs_api.stream_combined)
    app.router.add_get("/logs/stream/{source:.+}", logs_api.stream_source)
    add_docs_routes(app, __version__)
    return app


def app_routes(app: web.Application) -> Callable[[str, str], bool]:
    """Whether ``app`` has a route for a request: (method, path as aiohttp matches it —
    decoded, `%2F` kept). Read from the frozen route table once; a route the lane would
    shadow cannot be added by mistake, nor one the front does not know."""
    plain: dict[str, frozenset[str]] = {}
    dynamic: list[tuple[re.Pattern[str], frozenset[str]]] = []
    for resource in app.router.resources():
        methods = frozenset(route.method for route in resource)
        info = resource.get_info()
        if "path" in info:
            plain[info["path"]] = plain.get(info["path"], frozenset()) | methods
        elif "pattern" in info:
            dynamic.append((info["pattern"], methods))
        else:
            raise TypeError(f"the front cannot route to {resource!r}")

    def has(method: str, path: str) -> bool:
        methods = plain.get(path)
        if methods is not None and (method in methods or "*" in methods):
            return True
        return any((method in methods or "*" in methods) and pattern.fullmatch(path) for pattern, methods in dynamic)

    return has
