"""The hot path: send a request to an upstream and stream its answer back, unbuffered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

log = logging.getLogger("llama_swap.proxy")

# Hop-by-hop headers (RFC 9110 §7.6.1) plus those the client library must set itself.
# `expect` is dropped because forwarding `Expect: 100-continue` hangs the upstream call.
REQUEST_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
        "content-length",
    }
)
RESPONSE_DROP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

# Lower-case header names not to send upstream for this request (set by access control:
# the headers that carried llama-swap's API key, unless `forwardApiKeys`).
STRIP_HEADERS = web.RequestKey("strip_headers", frozenset[str])


WHOLE_BODY = 64 * 1024  # answers up to this size, with a Content-Length, are sent in one write
BODILESS = frozenset({204, 304})  # their headers must pass as they are

CANCELLED = "request cancelled through the llama-swap API"  # POST /api/inflight/{id}/cancel

# How an upstream that dies in the middle of its answer shows up while the body is read.
_BROKE_OFF = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class UpstreamUnavailable(Exception):
    """The upstream failed before sending a response (connection refused or reset, or
    ``timed_out``: it missed its connect or response-header deadline)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def make_session() -> aiohttp.ClientSession:
    """One client for all upstreams on the aiohttp path (health checks, swaps, passthrough):
    no total timeout (generations can be long), and no idle connections kept: an idle
    kept-alive connection makes llama-server take ~135 ms instead of ~27 ms to exit on
    SIGTERM (measured), which every swap would pay. The fast lane keeps its own pool."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
    )


def _end_to_end(headers: CIMultiDictProxy[str], hop_by_hop: frozenset[str]) -> CIMultiDict[str]:
    """``headers`` without ``hop_by_hop`` ones, nor those the sender named in `Connection`
    (which are per-hop too, RFC 9110 §7.6.1)."""
    drop = hop_by_hop
    if "Connection" in headers:
        named = {token.strip().lower() for value in headers.getall("Connection") for token in value.split(",")}
        drop = hop_by_hop.union(named)
    return CIMultiDict([(name, value) for name, value in headers.items() if name.lower() not in drop])


def _request_headers(request: web.Request) -> CIMultiDict[str]:
    strip = request.get(STRIP_HEADERS)
    headers = _end_to_end(request.headers, REQUEST_DROP if strip is None else REQUEST_DROP | strip)
    peer = request.remote
    if peer:
        previous = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    headers = _end_to_end(upstream.headers, RESPONSE_DROP)
    if upstream.content_type == "text/event-stream":
        headers["X-Accel-Buffering"] = "no"  # tell nginx & co. not to buffer the stream
    return headers


@dataclass(frozen=True)
class Deadlines:
    """A model's `timeouts.connect` and `timeouts.responseHeader`, in seconds (0 = none)."""

    connect: int = 30
    response_header: int = 0

    @functools.cached_property
    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect or None)


@functools.lru_cache(maxsize=None)
def deadlines(connect: int, response_header: int) -> Deadlines:
    """Shared, so the hot path builds no timeout objects."""
    return Deadlines(connect, response_header)


@contextlib.asynccontextmanager
async def open_upstream(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    model: str,
    deadlines: Deadlines = Deadlines(),
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send ``request`` (body already read) to ``url``; yields the upstream's response.

    Raises `UpstreamUnavailable` if the upstream fails (or misses its deadlines) before
    answering. Leaving the block closes the upstream call — which is how a client
    disconnect (it cancels the handler) stops the upstream's work.
    """
    target = URL(url, encoded=True)  # the client's path as it sent it: not re-quoted (nor re-parsed)
    upstream_cm = session.request(
        request.method,
        target,
        headers=_request_headers(request),
        data=body if body else None,
        allow_redirects=False,
        compress=None,
        timeout=deadlines.client_timeout,
    )
    try:
        if deadlines.response_header:
            async with asyncio.timeout(deadlines.response_header):
                upstream = await upstream_cm.__aenter__()
        else:  # no deadline: spare every request a timeout context
            upstream = await upstream_cm.__aenter__()
    except TimeoutError as exc:
        raise UpstreamUnavailable(
            f"upstream '{model}' did not answer in time: {exc or 'timed out'}", timed_out=True
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"upstream '{model}' did not answer: {exc or type(exc).__name__}") from exc
    try:
        yield upstream
    finally:
        await upstream_cm.__aexit__(None, None, None)


class Tap(Protocol):
    """What the relay reports an answer to (the request's accounting) as it passes."""

    cancelled: bool  # set when an operator cancels the request; its handler is then cancelled

    def respond(self, status: int, content_type: str, content_encoding: str) -> None:
        """The answer's status and its `Content-Type` and `Content-Encoding` as sent."""

    def chunk(self, data: bytes) -> None: ...


async def forward(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    model: str,
    tap: Tap,
    deadlines: Deadlines = Deadlines(),
) -> web.StreamResponse:
    """Proxy ``request`` to ``url`` and stream the answer back with its status and headers.

    A small answer of known length (most non-streamed JSON) is read whole and sent with its
    headers in one write; anything else is relayed chunk by chunk as it arrives.
    """
    async with open_upstream(request, session, url, body, model=model, deadlines=deadlines) as upstream:
        length = upstream.content_length
        if (
            length is not None and length <= WHOLE_BODY and request.method != "HEAD"
            and upstream.status not in BODILESS and upstream.content_type != "text/event-stream"
        ):
            return await _whole(upstream, model=model, tap=tap)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=_response_headers(upstream))
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        await relay(upstream, response, request, model=model, tap=tap)
        return response


async def _whole(upstream: aiohttp.ClientResponse, *, model: str, tap: Tap) -> web.Response:
    _respond(tap, upstream)
    try:
        body = await upstream.read()
    except _BROKE_OFF as exc:  # nothing was sent yet: a clean error instead of a cut-off body
        raise UpstreamUnavailable(f"{broke_off_message(model)}: {exc}") from exc
    tap.chunk(body)
    return web.Response(status=upstream.status, reason=upstream.reason, headers=_response_headers(upstream), body=body)


async def relay(
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    request: web.Request,
    *,
    model: str,
    tap: Tap,
) -> None:
    """Copy the upstream body to the prepared ``response`` chunk by chunk, as it arrives.

    Each chunk goes to ``tap`` before the client (the upstream did the work even if the
    client is gone). If the upstream dies mid-answer, or an operator cancels the request,
    an SSE stream gets a final error event (the `openai` client raises it); other bodies
    are cut short, so the client sees a truncated response rather than a complete-looking one.
    """
    _respond(tap, upstream)
    try:
        async for chunk in upstream.content.iter_any():
            tap.chunk(chunk)
            await response.write(chunk)
    except _BROKE_OFF as exc:
        log.warning("[%s] upstream broke off its response: %s", model, exc)
        await _break_off(upstream, response, request, broke_off_message(model), 502)
        return
    except asyncio.CancelledError:
        if not tap.cancelled:
            raise  # the client went away
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await _break_off(upstream, response, request, CANCELLED, 503)
        return
    await response.write_eof()


def _respond(tap: Tap, upstream: aiohttp.ClientResponse) -> None:
    headers = upstream.headers
    tap.respond(upstream.status, headers.get("Content-Type", ""), headers.get("Content-Encoding", "identity"))


async def _break_off(
    upstream: aiohttp.ClientResponse, response: web.StreamResponse, request: web.Request, message: str, code: int
) -> None:
    """End an answer that cannot be completed, so that the client cannot mistake it for whole."""
    if upstream.content_type != "text/event-stream":
        if request.transport is not None:
            request.transport.close()
        return
    await end_stream_with_error(response, message, code)


def broke_off_message(model: str) -> str:
    return f"upstream '{model}' stopped in the middle of the response"


async def end_stream_with_error(response: web.StreamResponse, message: str, code: int) -> web.StreamResponse:
    """Finish a started SSE answer with an error event (the `openai` client raises it)."""
    await response.write(sse_error(message, code))
    await response.write_eof()
    return response


def sse_error(message: str, code: int) -> bytes:
    """An SSE event carrying an error, which the `openai` client raises as `APIError`."""
    payload = {"error": {"message": message, "type": "server_error", "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"
