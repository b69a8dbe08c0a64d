"""The fast lane: an inference request to a model that is ready, served without aiohttp.

It does what `server/inference.py` does for such a request — access control, the model
from the body, the model's filters, the router's lease (concurrency limit, TTL), the
activity record, an unbuffered relay with usage metering, an error event when an upstream
breaks off mid-stream, operator cancellation — on the front's own connection and the
pooled `UpstreamClient`. Whatever needs more (a start or a swap, a loading stream, a
request to refuse with an explanation, an upstream that did not answer and may need a
replay) it declines before anything is sent, and the front hands the request to the
aiohttp application, which has the one implementation of all of that.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple
from urllib.parse import urlsplit

from llama_swap.config import Config, ModelConfig
from llama_swap.observe.activity import Tracked
from llama_swap.process import ProcessState
from llama_swap.proxy import (
    BODILESS,
    CANCELLED,
    REQUEST_DROP,
    RESPONSE_DROP,
    WHOLE_BODY,
    broke_off_message,
    sse_error,
)
from llama_swap.routing.router import RouteError
from llama_swap.server.app import MIB
from llama_swap.server.auth import CARRIED_BY, key_digests, key_matches, presented_key, target_problem
from llama_swap.server.errors import HTTPError
from llama_swap.server.extract import model_from_body
from llama_swap.server.filters import rewrite_request
from llama_swap.server.front import END_CHUNKS, Connection, Incoming, chunk, error_answer, reason_phrase
from llama_swap.server.inference import CRASH_NOTICE_SECONDS, INFERENCE_PATHS, REPLAY_NOTICE, route_error_headers
from llama_swap.server.service import Service
from llama_swap.upstream_client import Exchange, UpstreamClient, UpstreamClosed

log = logging.getLogger("llama_swap.proxy")

_FAST_PATHS = frozenset(path.encode() for path in INFERENCE_PATHS)
# The aiohttp path's header rules, as the bytes the fast lane compares.
_REQUEST_DROP = frozenset(name.encode() for name in REQUEST_DROP)
_RESPONSE_DROP = frozenset(name.encode() for name in RESPONSE_DROP)


class _Route(NamedTuple):
    """What the fast lane needs of one model, read once per config (pydantic reads cost)."""

    model: ModelConfig
    model_id: str
    host: str
    port: int
    host_header: bytes
    connect_timeout: float | None


class _Plan:
    """One config's settings as the fast lane reads them, and its routes by requested name."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.max_body = config.max_body_mb * MIB
        self.digests = key_digests(tuple(config.api_keys)) if config.api_keys else None
        self.forward_keys = config.forward_api_keys
        self._routes: dict[str, _Route | None] = {}

    def route(self, name: str) -> _Route | None:
        """The route for a model id or alias; None when the fast lane must not take it:
        unknown name, an upstream that is not plain `http://host:port` (https, a path
        prefix), or a response-header deadline (the aiohttp path enforces it)."""
        try:
            return self._routes[name]
        except KeyError:
            pass
        model = self.config.model_for(name)
        route = None
        if model is not None and not model.timeouts.response_header:
            parts = urlsplit(model.proxy)
            if parts.scheme == "http" and parts.path in ("", "/") and not parts.query and parts.hostname:
                route = _Route(model, model.id, parts.hostname, parts.port or 80, parts.netloc.encode("idna"),
                               model.timeouts.connect or None)
        if model is not None:  # only configured names are kept: the cache stays bounded
            self._routes[name] = route
        return route


class FastLane:
    """Decides which requests it takes, and serves them."""

    def __init__(self, service: Service, client: UpstreamClient) -> None:
        self._service = service
        self._client = client
        self._plan = _Plan(service.config)

    @property
    def plan(self) -> _Plan:
        """The plan of the running config (a reload replaces the config object)."""
        if self._plan.config is not self._service.config:
            self._plan = _Plan(self._service.config)
        return self._plan

    @property
    def max_body(self) -> int:
        return self.plan.max_body

    def takes(self, request: Incoming) -> bool:
        """By its head alone: an HTTP/1.1 POST to an inference path, of an allowed size."""
        if request.method != b"POST" or request.version != "1.1":
            return False
        path = request.target.split(b"?", 1)[0]
        if path not in _FAST_PATHS:
            return False
        for name, value in request.raw_headers:
            if len(name) == 14 and name.lower() == b"content-length":
                if not value.isdigit() or int(value) > self.max_body:
                    return False
            elif len(name) == 12 and name.lower() == b"content-type":
                request.content_type = value
            elif len(name) == 6 and name.lower() == b"expect":
                if value.lower() != b"100-continue":
                    return False
                request.expects_continue = True
        return True

    async def serve(self, request: Incoming, conn: Connection) -> bool:
        """Answer ``request`` on ``conn``; False (with nothing sent) to leave it to aiohttp."""
        service = self._service
        plan = self.plan
        headers = request.headers
        strip: frozenset[bytes] = frozenset()
        if plan.digests is not None:
            found = presented_key(headers)
            if not key_matches(found[0] if found else None, plan.digests):
                return False
            if not plan.forward_keys:
                assert found is not None
                strip = CARRIED_BY_BYTES[found[1]]
        target = request.target.decode("latin-1")
        if target_problem(target) is not None:
            return False
        content_type = request.content_type.decode("utf-8", "surrogateescape")
        body = b"".join(request.body)
        try:
            name = model_from_body(content_type, body)
        except HTTPError:
            return False
        route = plan.route(name) if name is not None else None
        if route is None:
            return False
        assert name is not None
        model = route.model
        model_id = route.model_id
        process = service.processes[model_id]
        if process.state is not ProcessState.READY:
            return False
        try:
            body = rewrite_request(model, name, content_type, body)
            ticket = service.router.admit(model_id)
        except (HTTPError, RouteError):
            return False
        path = target.split("?", 1)[0]
        tracked = service.activity.begin(model_id, "POST", path, headers, conn.peer, label=path, metered=True)
        status = 499  # the client went away before an answer; replaced below
        lease = None
        exchange = None
        try:
            lease = service.router.granted(ticket) or await service.router.wait(ticket)
            outgoing = _request_head(request, route.host_header, strip, conn.peer, len(body)) + body
            try:
                exchange = await self._client.send(route.host, route.port, outgoing,
                                                   connect_timeout=route.connect_timeout)
            except OSError:  # refused, reset, timed out: the aiohttp path replays or explains
                service.activity.discard(tracked)
                tracked = None
                if await process.died(within=CRASH_NOTICE_SECONDS):
                    log.warning(REPLAY_NOTICE, model_id)
                return False
            tracked.respond(exchange.status, exchange.raw_content_type, exchange.content_encoding)
            if _is_small(exchange):
                try:
                    whole = await exchange.read()
                except UpstreamClosed:  # nothing was sent yet: the aiohttp path replays or explains
                    service.activity.discard(tracked)
                    tracked = None
                    return False
                tracked.chunk(whole)
                conn.write(_response_head(exchange, request.keep_alive, chunked=False) + whole)
            else:
                await _relay(exchange, conn, tracked, request.keep_alive, model_id)
            status = exchange.status  # only now: a client that left mid-answer is a 499
            return True
        except RouteError as exc:  # refused while waiting for the model (e.g. it failed meanwhile)
            status = exc.status
            if tracked is not None:
                tracked.error = exc.message
            conn.write(error_answer(exc.status, exc.message, route_error_headers(exc), keep_alive=request.keep_alive))
            return True
        except asyncio.CancelledError:
            if tracked is None or not tracked.cancelled:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status = 503
            conn.write(error_answer(503, CANCELLED, keep_alive=request.keep_alive))
            return True
        finally:
            if exchange is not None:
                exchange.close()
            if lease is not None:
                service.router.release(lease)
            if tracked is not None:
                service.activity.finish(tracked, status)


def _is_small(exchange: Exchange) -> bool:
    """A small answer of known length, not a stream: read whole and sent in one write."""
    length = exchange.content_length
    return (length is not None and length <= WHOLE_BODY and exchange.content_type != "text/event-stream"
            and exchange.status not in BODILESS)


async def _relay(exchange: Exchange, conn: Connection, tracked: Tracked, keep_alive: bool, model_id: str) -> None:
    """Relay the answer chunk by chunk as it arrives. If the upstream breaks off, or an
    operator cancels the request, the answer is ended so that it cannot pass for whole."""
    chunked = exchange.content_length is None and exchange.status not in BODILESS
    sse = exchange.content_type == "text/event-stream"
    conn.write(_response_head(exchange, keep_alive, chunked=chunked))
    try:
        async for data in exchange:
            tracked.chunk(data)
            conn.write(chunk(data) if chunked else data)
            if conn.paused:
                await conn.drain()
    except UpstreamClosed as exc:
        log.warning("[%s] upstream broke off its response: %s", model_id, exc)
        _break_off(conn, sse, chunked, broke_off_message(model_id), 502)
        return
    except asyncio.CancelledError:
        if not tracked.cancelled:
            raise  # the client went away
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        _break_off(conn, sse, chunked, CANCELLED, 503)
        return
    if chunked:
        conn.write(END_CHUNKS)


CARRIED_BY_BYTES = {scheme: frozenset(name.encode() for name in names) for scheme, names in CARRIED_BY.items()}


def _request_head(request: Incoming, host: bytes, strip: frozenset[bytes], peer: str | None, length: int) -> bytes:
    """The request line and end-to-end headers for the upstream, with its own framing."""
    drop = _REQUEST_DROP | strip if strip else _REQUEST_DROP
    raw = request.raw_headers
    forwarded_for = b""
    lines = [b"POST ", request.target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in raw:
        lower = name.lower()
        if lower in drop:
            if lower == b"connection":  # the headers it names are per-hop too: start again without them
                return _request_head_without(request, host, drop | _tokens(value), peer, length)
        elif lower == b"x-forwarded-for":
            forwarded_for = value
        else:
            lines += (name, b": ", value, b"\r\n")
    if peer:
        lines += (b"X-Forwarded-For: ", forwarded_for + b", " + peer.encode() if forwarded_for else peer.encode(), b"\r\n")
    elif forwarded_for:
        lines += (b"X-Forwarded-For: ", forwarded_for, b"\r\n")
    lines.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)


def _request_head_without(request: Incoming, host: bytes, drop: frozenset[bytes], peer: str | None,
                          length: int) -> bytes:
    trimmed = Incoming()
    trimmed.target = request.target
    trimmed.raw_headers = [(name, value) for name, value in request.raw_headers if name.lower() not in drop]
    return _request_head(trimmed, host, frozenset(), peer, length)


def _tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(token.strip().lower() for token in value.split(b","))


def _response_head(exchange: Exchange, keep_alive: bool, *, chunked: bool) -> bytes:
    """Status line and end-to-end headers of the upstream's answer, framed for our client."""
    status = exchange.status
    drop = _RESPONSE_DROP
    for name, value in exchange.raw_headers:
        if name.lower() == b"connection":
            drop = drop | _tokens(value)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, (exchange.reason or reason_phrase(status)).encode("latin-1"))]
    for name, value in exchange.raw_headers:
        if name.lower() not in drop:
            lines += (name, b": ", value, b"\r\n")
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if exchange.content_type == "text/event-stream":
        lines.append(b"X-Accel-Buffering: no\r\n")  # tell nginx & co. not to buffer the stream
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _break_off(conn: Connection, sse: bool, chunked: bool, message: str, code: int) -> None:
    """End an answer that cannot be completed so that the client cannot take it for whole:
    an SSE stream gets an error event (the `openai` client raises it); other bodies are cut."""
    if sse and chunked:
        conn.write(chunk(sse_error(message, code)) + END_CHUNKS)
    else:
        conn.close()
