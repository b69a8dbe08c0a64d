"""The lane: every request for a model, served on the front's own connection.

A request is for a model when the aiohttp app has no route for it — an inference path
(`POST /v1/chat/completions`…), any other path naming a model (`GET /props?model=x`, a
request to the one running model), or `/upstream/{model}/…`. The lane does for it, once and
for every such request: access control, which model (body, query, path), the model's
filters, then — inside the one request skeleton (`server/request.py`) — the router's lease,
the upstream exchange and the one relay (`proxy.py`, `wire/relay.py`), or a loading stream
while the model starts (`server/loading.py`).
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import parse_qsl, unquote

import orjson
from multidict import MultiDict
from yarl import URL

from llama_swap import __version__
from llama_swap.config import Config, ModelConfig
from llama_swap.config.model import COMFYUI_MODEL_ID
from llama_swap.dialects import ollama
from llama_swap.dialects.ollama_answers import OllamaAnswer, control_answer
from llama_swap.errors import HTTPError, model_not_found
from llama_swap.process import ProcessState
from llama_swap.proxy import Call, forward, forward_to_peer
from llama_swap.routing.names import Destination, Names, PeerModel
from llama_swap.routing.router import RouteError
from llama_swap.server import comfyui
from llama_swap.server.auth import (
    CARRIED_BY,
    REALM,
    UNAUTHORIZED,
    key_digests,
    key_matches,
    presented_key,
    target_problem,
)
from llama_swap.server.extract import model_from_body, model_from_query
from llama_swap.server.filters import rewrite_request, with_model
from llama_swap.server.loading import serve_while_loading, wants_loading_state
from llama_swap.server.request import Handling, refusal
from llama_swap.server.router_props import autoload_refused, router_props, wants_router_props
from llama_swap.server.service import Service
from llama_swap.server.websocket import serve_ignored, serve_leased, serve_peer
from llama_swap.wire.framing import head, json_answer
from llama_swap.wire.front import Connection, Limits, error_answer
from llama_swap.wire.headers import find
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.tunnel import is_websocket

# Known inference paths: the only values used as the `path` metrics label (bounded
# cardinality), and the `/upstream/` sub-paths that count toward a model's concurrency limit.
INFERENCE_PATHS = frozenset(
    {
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking",
        "/rerank", "/reranking", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens",
        "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/voices", "/v1/images/generations",
        "/v1/images/edits", "/infill", "/completion", "/completions", "/chat/completions", "/embedding",
        "/embeddings", "/tokenize", "/detokenize", "/apply-template", "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img", "/props", "/slots", *ollama.PATHS,
    }
)
_INFERENCE_TARGETS = frozenset(path.encode() for path in INFERENCE_PATHS)
_OLLAMA_TARGETS = frozenset(path.encode() for path in ollama.PATHS)
# Not sent upstream with a translated request: its answer must be plain JSON or SSE to be read.
_TRANSLATED_STRIP = frozenset({b"accept-encoding"})
_UPSTREAM = b"/upstream/"
CARRIED_BY_BYTES = {scheme: frozenset(name.encode() for name in names) for scheme, names in CARRIED_BY.items()}
_METHODS = {method.encode(): method for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}

AppRoutes = Callable[[str, str], bool]
"""Whether the aiohttp app has a route for (method, path)."""


class _Plan:
    """One config's settings as the lane reads them (a reload replaces the config object)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        timeouts = config.client_timeouts
        self.limits = Limits(config.max_header_bytes, config.max_body_bytes, timeouts.header, timeouts.body,
                             timeouts.idle)
        self.digests = key_digests(tuple(config.api_keys)) if config.api_keys else None
        self.loading = frozenset(model_id for model_id, model in config.models.items() if model.send_loading_state)
        self.forward_keys = config.forward_api_keys
        self.ignore_websockets = frozenset(m for m, model in config.models.items() if model.compat.ignore_websockets)
        self._models: dict[str, tuple[ModelConfig, str]] = {}

    def local(self, name: str) -> tuple[ModelConfig, str] | None:
        """The local model for an id or alias, and its id (None otherwise); read from the
        config once per configured name (pydantic's attributes are slow to read on every request)."""
        try:
            return self._models[name]
        except KeyError:
            model = self.config.model_for(name)
            if model is None:
                return None
            found = self._models[name] = (model, model.id)
            return found


class Lane:
    """Decides which requests are for a model (`takes`), and serves them (`serve`)."""

    def __init__(self, service: Service, app_routes: AppRoutes) -> None:
        self._service = service
        self._app_routes = app_routes
        self._plan = _Plan(service.config)

    @property
    def plan(self) -> _Plan:
        if self._plan.config is not self._service.config:
            self._plan = _Plan(self._service.config)
        return self._plan

    @property
    def limits(self) -> Limits:
        return self.plan.limits

    def takes(self, request: Incoming) -> bool:
        """By its head: a request for a model, unless the aiohttp app has a route for it (or
        it is a browser's CORS preflight, which the app answers for any path)."""
        target = request.target
        if target in _INFERENCE_TARGETS and request.method == b"POST":
            return True  # the common case, decided without decoding anything
        if request.method == b"OPTIONS" and find(request.raw_headers, b"access-control-request-method") is not None:
            return False
        if not target.startswith(b"/"):
            return True  # refused by the lane (400), as every target it cannot proxy
        try:
            path = URL.build(path=target.split(b"?", 1)[0].decode("latin-1"), encoded=True).path_safe
        except ValueError:
            return True
        return not self._app_routes(request.method.decode("latin-1"), path)

    async def serve(self, request: Incoming, conn: Connection) -> None:
        """Answer ``request``: accepted (or refused at once), then proxied inside the request
        skeleton — a loading stream while the model starts if the client can show one, else
        the lease, the upstream and the relay."""
        plan = self.plan
        translation: OllamaAnswer | None = None
        try:
            strip = self._admit(request, plan)
            if request.target.startswith(_UPSTREAM):
                call = await self._upstream_call(request, conn, plan, strip)
                if call is None:
                    return  # answered by the service itself (load, unload, redirect)
            elif request.target not in _INFERENCE_TARGETS and comfyui.is_comfyui(request.target):
                call = self._comfyui_call(request, conn, plan, strip)
                if call is None:
                    return  # the redirect to /comfyui/
            elif request.method == b"POST" and request.target.partition(b"?")[0] in _OLLAMA_TARGETS:
                asked = self._ollama_asked(request, plan)
                if asked.target is None:
                    await self._ollama_control(asked, request, conn)
                    return
                call, translation = self._ollama_call(asked, request, plan, strip)
            else:
                call = self._model_call(request, conn, plan, strip)
                if call is None:
                    return  # answered by the service itself (the router's /props)
        except HTTPError as exc:
            conn.write(error_answer(exc.status, exc.message, exc.headers, connection=request.connection))
            return
        service = self._service
        websocket = request.upgrade and is_websocket(request.raw_headers)
        if websocket and call.model in plan.ignore_websockets:
            await serve_ignored(service, call, request, conn)
            return
        path = call.path
        method = _METHODS.get(request.method) or request.method.decode("latin-1")
        inference = path in INFERENCE_PATHS
        destination = call.destination
        try:
            with Handling(service.activity, conn, call.model, method, path, request.headers,
                          path if inference else "other", inference and method == "POST",
                          request.connection) as handling:
                service.captures.watch(handling.tracked, request)
                if destination is not None and destination.selector is not None:
                    handling.tracked.selector = destination.selector
                if destination is not None and destination.peer is not None:
                    if websocket:
                        await serve_peer(service, destination.peer, call, request, conn, handling)
                    else:
                        handling.status = await forward_to_peer(service.upstreams, destination.peer, call, request,
                                                                conn, handling.tracked, translation)
                elif websocket:
                    await serve_leased(service, call, request, conn, handling)
                elif call.model in plan.loading and self._shows_loading(call, request):
                    handling.status = await serve_while_loading(service, call, request, conn, handling.tracked)
                else:
                    handling.status = await forward(service.router, service.upstreams, call, request, conn,
                                                    handling.tracked, translation)
        finally:
            if destination is not None:
                service.names.release(destination)

    # ------------------------------------------------------------------ accept

    def _admit(self, request: Incoming, plan: _Plan) -> frozenset[bytes]:
        """Access control and the target's check; the fields that must not go upstream."""
        strip: frozenset[bytes] = frozenset()
        if plan.digests is not None:
            found = presented_key(request.headers)
            if not key_matches(found[0] if found else None, plan.digests):
                raise HTTPError(401, UNAUTHORIZED, {"WWW-Authenticate": REALM})
            if not plan.forward_keys:
                assert found is not None
                strip = CARRIED_BY_BYTES[found[1]]
        problem = target_problem(request.target.decode("latin-1"))
        if problem is not None:
            raise HTTPError(400, f"invalid request target: {problem}")
        return strip

    def _model_call(self, request: Incoming, conn: Connection, plan: _Plan, strip: frozenset[bytes]) -> Call | None:
        """A request naming its model in the body or the query, or meant for the one running;
        None when the service answered it itself (`GET /props` of the router, `router_props.py`)."""
        target = request.target
        raw_path, _, query = target.partition(b"?")
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        content_type = request.content_type.decode("utf-8", "surrogateescape")
        name = model_from_body(content_type, body)
        params = MultiDict(parse_qsl(query.decode("utf-8", "surrogateescape"), keep_blank_values=True)) if query else None
        if name is None and params is not None:
            name = model_from_query(params)
        path = raw_path.decode("latin-1")
        if name is None:
            if body:
                raise HTTPError(400, "missing 'model' field in request body")
            running = self._service.router.running()
            if path == "/props" and request.method == b"GET" and wants_router_props(params, len(running)):
                _answer_router_props(request, conn)
                return None
            name = self._the_running_model(request, path, running)
        return self._named_call(name, target, path, content_type, body, plan, strip, autoload_refused(params))

    def _named_call(self, name: str, target: bytes, path: str, content_type: str, body: bytes, plan: _Plan,
                    strip: frozenset[bytes], refuse_load: bool = False) -> Call:
        """The call for the model ``name`` resolves to, its body through that model's filters
        (``refuse_load``, llama.cpp's `?autoload=false`: only if it is loaded or loading already)."""
        names = self._service.names
        if names.pins is None:
            found = plan.local(name)  # the common case: a model id or alias, no profile active
            if found is not None:
                model, model_id = found
                if refuse_load:
                    self._check_loaded(model_id, name)
                if body:
                    body = rewrite_request(model, name, content_type, body)
                return Call(model_id, name, target, path, body, True, strip)
        destination = names.resolve(name, self._service.state_of)
        try:
            if refuse_load and destination.peer is None:
                self._check_loaded(destination.model, name)
            filtered = destination.peer or plan.config.models[destination.model]
            if body:
                if destination.selector is not None and destination.peer is None:
                    body = with_model(content_type, body, destination.requested)  # as llama-swap: the target's name
                body = rewrite_request(filtered, destination.requested, content_type, body)
        except BaseException:
            names.release(destination)
            raise
        return Call(destination.model, destination.requested, target, path, body, True, strip, destination)

    # ------------------------------------------------------------------ Ollama

    def _ollama_asked(self, request: Incoming, plan: _Plan) -> ollama.Asked:
        """An Ollama request, translated; a `name:latest` the config only knows as `name` is `name`."""
        path = request.target.partition(b"?")[0].decode("latin-1")
        asked = ollama.translate(path, b"".join(request.body))
        name = asked.model
        if name.endswith(":latest") and plan.config.model_for(name) is None:
            bare = name.removesuffix(":latest")
            if plan.config.model_for(bare) is not None:
                asked = asked._replace(model=bare, body=asked.body and {**asked.body, "model": bare})
        return asked

    def _ollama_call(self, asked: ollama.Asked, request: Incoming, plan: _Plan,
                     strip: frozenset[bytes]) -> tuple[Call, OllamaAnswer]:
        """The OpenAI call an Ollama request becomes, and the translation of its answer."""
        path = request.target.partition(b"?")[0].decode("latin-1")
        assert asked.target is not None and asked.body is not None
        call = self._named_call(asked.model, asked.target.encode(), path, "application/json",
                                orjson.dumps(asked.body), plan, strip | _TRANSLATED_STRIP)
        return call._replace(keep_alive=asked.keep_alive), OllamaAnswer(asked, time.perf_counter())

    async def _ollama_control(self, asked: ollama.Asked, request: Incoming, conn: Connection) -> None:
        """A chat without messages or a generate without a prompt: load the model, or with
        `keep_alive: 0` unload it, through the router like `/upstream/{model}/load` and
        `DELETE /upstream/{model}`."""
        service = self._service
        destination = service.names.resolve(asked.model, service.state_of)
        try:
            if destination.peer is not None:
                raise HTTPError(400, f"model '{asked.model}' is served by peer '{destination.peer.peer_id}': "
                                     "it is not loaded or unloaded here")
            if asked.keep_alive == 0:
                await service.router.unload([destination.model])
                reason = "unload"
            else:
                try:
                    await service.router.load(destination.model, asked.keep_alive)
                except RouteError as exc:
                    raise refusal(exc) from exc
                reason = "load"
        finally:
            service.names.release(destination)
        conn.write(json_answer(200, orjson.dumps(control_answer(asked, reason)), connection=request.connection))

    def _check_loaded(self, model_id: str, name: str) -> None:
        """`?autoload=false`: the model must be loaded or loading already (llama.cpp's router)."""
        if self._service.state_of(model_id) not in (ProcessState.READY, ProcessState.STARTING):
            raise HTTPError(400, f"model '{name}' is not loaded, and the request's autoload parameter says not to load it")

    def _the_running_model(self, request: Incoming, path: str, running: list[str]) -> str:
        """A request naming no model (e.g. `GET /slots`) goes to the one running model."""
        if len(running) == 1:
            return running[0]
        where = "none is running" if not running else f"{len(running)} are running: {', '.join(running)}"
        raise HTTPError(
            400,
            f"no model specified for {request.method.decode('latin-1')} {unquote(path)}: add ?model=<id> "
            f"(or a 'model' field in the body); {where}",
        )

    async def _upstream_call(self, request: Incoming, conn: Connection, plan: _Plan,
                             strip: frozenset[bytes]) -> Call | None:
        """`/upstream/{model}[/path]`: unload (DELETE), load (GET …/load), or a passthrough
        that only an inference path counts toward the concurrency limit."""
        model, requested, rest = split_upstream_path(plan.config, self._service.names,
                                                     request.target.decode("latin-1"))
        method = request.method
        if isinstance(model, PeerModel):
            return self._peer_passthrough(model, requested, rest, request, conn, strip)
        if not rest or rest.startswith("?"):
            if method == b"DELETE":
                conn.write(json_answer(200, orjson.dumps(await self._unload(model)), connection=request.connection))
            else:
                conn.write(redirect(request, f"/upstream/{model.id}/{rest}"))
            return None
        path = rest.split("?", 1)[0]
        if path == "/load" and method in (b"GET", b"HEAD"):
            await self._load(model)
            ready = {"status": "ok", "message": f"{model.id} is ready"}
            conn.write(json_answer(200, orjson.dumps(ready), connection=request.connection))
            return None
        service = self._service
        if service.processes[model.id].state is not ProcessState.READY and _ignored(plan.config, path):
            raise HTTPError(409, f"model '{model.id}' is not loaded; {path} does not load it (upstream.ignorePaths)")
        counted = path in INFERENCE_PATHS
        body = b"".join(request.body)
        if counted and body:
            body = rewrite_request(model, requested, request.content_type.decode("utf-8", "surrogateescape"), body)
        return Call(model.id, requested, rest.encode("latin-1"), path, body, counted, strip)

    def _peer_passthrough(self, peer: PeerModel, requested: str, rest: str, request: Incoming, conn: Connection,
                          strip: frozenset[bytes]) -> Call | None:
        """`/upstream/{peer}/{model}/…`: straight to the peer (which starts and stops its models itself)."""
        if not rest or rest.startswith("?"):
            if request.method == b"DELETE":
                raise HTTPError(400, f"model '{peer.fqn}' is served by peer '{peer.peer_id}': it is not stopped here")
            conn.write(redirect(request, f"/upstream/{peer.fqn}/{rest}"))
            return None
        path = rest.split("?", 1)[0]
        body = b"".join(request.body)
        if path in INFERENCE_PATHS and body:
            body = rewrite_request(peer, requested, request.content_type.decode("utf-8", "surrogateescape"), body)
        return Call(peer.fqn, requested, rest.encode("latin-1"), path, body, False, strip,
                    Destination(peer.fqn, requested, peer, None))

    def _comfyui_call(self, request: Incoming, conn: Connection, plan: _Plan, strip: frozenset[bytes]) -> Call | None:
        """`/comfyui/{path}`: a passthrough to the model `comfyui_auto` (`server/comfyui.py`)."""
        rest = comfyui.rest_of(request.target.decode("latin-1"))
        if not rest.startswith("/"):
            conn.write(redirect(request, f"/comfyui/{rest}"))
            return None
        model = plan.config.models.get(COMFYUI_MODEL_ID)
        if model is None:
            raise HTTPError(404, comfyui.NOT_CONFIGURED)
        path = rest.split("?", 1)[0]
        if (comfyui.does_not_start(request.method, path)
                and self._service.processes[model.id].state is not ProcessState.READY):
            raise HTTPError(409, comfyui.NOT_LOADED)
        counted = path in INFERENCE_PATHS
        body = b"".join(request.body)
        return Call(model.id, model.id, rest.encode("latin-1"), path, body, counted, strip)

    async def _unload(self, model: ModelConfig) -> dict[str, str]:
        service = self._service
        if service.processes[model.id].pid is None:
            return {"status": "error", "message": f"{model.id} is not running"}
        await service.router.unload([model.id])
        return {"status": "ok", "message": f"{model.id} stopped"}

    async def _load(self, model: ModelConfig) -> None:
        """Start ``model`` and wait until it is ready; a failure is the service's error (503
        `{"error": …}`, as for a request that started it)."""
        try:
            await self._service.router.load(model.id)
        except RouteError as exc:
            raise refusal(exc) from None

    def _shows_loading(self, call: Call, request: Incoming) -> bool:
        """For a model with `sendLoadingState`: whether this request gets a loading stream."""
        return (
            request.version == "1.1"  # the stream is chunked
            and self._service.processes[call.model].state is not ProcessState.READY
            and wants_loading_state(call.path, call.body)
        )


def split_upstream_path(config: Config, names: Names, raw_target: str) -> tuple[ModelConfig | PeerModel, str, str]:
    """`/upstream/{model}{rest}`: the longest configured id, alias or peer model wins, so
    `author/model` works; ``rest`` is the raw path and query after it."""
    tail = raw_target[len("/upstream/"):]
    segments = tail.split("?", 1)[0].split("/")
    for end in range(len(segments), 0, -1):
        candidate = "/".join(segments[:end])
        name = unquote(candidate)
        model = config.model_for(name) or names.peer_model(name)
        if model is not None:
            return model, name, tail[len(candidate):]
    raise model_not_found(unquote(segments[0]))


def _answer_router_props(request: Incoming, conn: Connection) -> None:
    """llama.cpp's router `/props` (`router_props.py`), readable cross-origin: llama.cpp's web
    UI may be served from another origin."""
    origin = find(request.raw_headers, b"origin")
    cors = {"Access-Control-Allow-Origin": origin.decode("latin-1")} if origin else None
    conn.write(json_answer(200, orjson.dumps(router_props(__version__)), cors, connection=request.connection))


def redirect(request: Incoming, location: str) -> bytes:
    """A permanent redirect to the path with a trailing slash: 301 for GET and HEAD, else 308
    (which keeps the method and body)."""
    status = 301 if request.method in (b"GET", b"HEAD") else 308
    return head(status, "", [(b"Location", location.encode("latin-1")), (b"Content-Length", b"0")],
                connection=request.connection)


def _ignored(config: Config, path: str) -> bool:
    """Static assets a browser fetches from an upstream's UI must not trigger a swap."""
    return any(pattern.search(path) for pattern in config.upstream.ignore_patterns)
