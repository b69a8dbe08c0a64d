"""The listening socket: HTTP/1.1 connections parsed with httptools, with a fast lane.

Every connection starts here. A plain inference request (`POST /v1/chat/completions`
and the other inference paths, HTTP/1.1) goes to the fast lane (`server/fastlane.py`),
which serves it directly when its model is ready — the path that must cost least.
Anything else, and anything the fast lane declines before answering (a swap, a loading
stream, an error to explain, a replay), goes to the aiohttp application: the connection
is *bridged* to an aiohttp request handler, which is fed the requests as parsed here and
writes its answers through a `_BridgeTransport`. Once aiohttp has finished every answer
it was given, the next fast request takes the connection back. So every endpoint, error
and slow path keeps its one implementation in the aiohttp app, and the common request
skips it, whatever came before it on the connection.

Requests on one connection are answered in order (pipelining is allowed but rare); a
fast request's body is read whole before it is served (the model is named inside it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Mapping

import httptools
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from llama_swap.rawheaders import RawHeaders
from llama_swap.server.errors import error_body

if TYPE_CHECKING:
    from llama_swap.server.fastlane import FastLane

log = logging.getLogger("llama_swap.server")

IDLE_SECONDS = 75.0  # a kept-alive connection with no request for this long is closed (aiohttp's default)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
END_CHUNKS = b"0\r\n\r\n"  # the last chunk of a chunked body


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_answer(status: int, message: str, headers: Mapping[str, str] | None = None, *, keep_alive: bool) -> bytes:
    """A whole answer carrying the service's own error, `{"error": message}`, as the aiohttp
    side's `error_response` gives it."""
    body = error_body(message)
    lines = [b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status, reason_phrase(status).encode(), len(body))]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines) + body


class Incoming:
    """One request as parsed: head, body so far, and whether the fast lane may take it."""

    __slots__ = ("method", "target", "version", "raw_headers", "headers", "keep_alive", "chunked", "body", "size",
                 "complete", "fast", "expects_continue", "content_type")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers = RawHeaders(self.raw_headers)
        self.keep_alive = True
        self.chunked = False
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.fast = False
        self.expects_continue = False  # `Expect: 100-continue` (seen by the fast lane)
        self.content_type = b""  # (seen by the fast lane)

    def head_bytes(self) -> bytes:
        """The request line and headers as received, for the aiohttp handler."""
        lines = [b"%s %s HTTP/%s\r\n" % (self.method, self.target, self.version.encode())]
        lines.extend(name + b": " + value + b"\r\n" for name, value in self.raw_headers)
        lines.append(b"\r\n")
        return b"".join(lines)

    def body_bytes(self, data: bytes) -> bytes:
        """Body bytes in the framing the head announced (llhttp hands them over de-chunked)."""
        return chunk(data) if self.chunked and data else data


class _BridgeTransport(asyncio.Transport):
    """The transport an aiohttp handler writes through: the client's socket, until the front
    takes the connection back (after which nothing the handler does reaches the socket)."""

    def __init__(self, conn: Connection, real: asyncio.Transport) -> None:
        super().__init__()
        self.conn = conn
        self._real = real
        self._attached = True
        self._paused_reading = False

    def detach(self) -> None:
        if self._paused_reading:
            self._real.resume_reading()
        self._attached = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._attached:
            self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self._attached:
            self._real.writelines(list_of_data)

    def is_closing(self) -> bool:
        return not self._attached or self._real.is_closing()

    def close(self) -> None:
        if self._attached:
            self._real.close()

    def abort(self) -> None:
        if self._attached:
            self._real.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self._attached and not self._paused_reading:
            self._paused_reading = True
            self._real.pause_reading()

    def resume_reading(self) -> None:
        if self._attached and self._paused_reading:
            self._paused_reading = False
            self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._attached and not self._paused_reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False


class AnswerCounter(AbstractAccessLogger):
    """aiohttp's hook after each finished answer (its access log, which is otherwise off):
    tells a bridged connection that one more of the requests it handed over is answered."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        transport = request.transport
        if isinstance(transport, _BridgeTransport):
            transport.conn.answered_by_bridge()

    @property
    def enabled(self) -> bool:
        return True


class Connection(asyncio.Protocol):
    """One client connection: parses requests, serves them in order, or bridges to aiohttp."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._current: Incoming | None = None
        self._queue: collections.deque[Incoming] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._bridge: web.RequestHandler | None = None  # type: ignore[type-arg]
        self._bridge_transport: _BridgeTransport | None = None
        self._handed = 0  # requests given to the bridge ...
        self._answered = 0  # ... and answered by it
        self._raw = False  # after an upgrade: bytes go to the bridge unparsed
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self.idle_since = 0.0

    # -------------------------------------------------------------- serving

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    @property
    def paused(self) -> bool:
        """The client's socket buffer is full: wait with `drain` before writing more."""
        return self._paused

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full (a slow reader slows the relay)."""
        if self._paused:
            waiter = self._drained = asyncio.get_running_loop().create_future()
            await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def bridged(self) -> bool:
        return self._bridge is not None

    @property
    def idle(self) -> bool:
        """Nothing being received or answered (a bridged connection is aiohttp's to judge)."""
        return self._bridge is None and self._task is None and not self._queue and self._current is None

    def answered_by_bridge(self) -> None:
        self._answered += 1

    def _next(self) -> None:
        if self._task is not None or not self._queue:
            return
        request = self._queue[0]
        if not request.fast:
            self._to_bridge()
        elif request.complete:
            self._task = asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: Incoming) -> None:
        try:
            served = await self._front.lane.serve(request, self)
        except asyncio.CancelledError:  # the client went away
            return
        except Exception:
            log.exception("unhandled error in the fast lane for %s", request.target.decode("latin-1"))
            self.close()
            return
        finally:
            self._task = None
        if self.transport is None or self.transport.is_closing():
            return
        if not served:
            request.fast = False
            self._to_bridge()
            return
        self._queue.popleft()
        if not request.keep_alive:
            self.close()
            return
        self.idle_since = asyncio.get_running_loop().time()
        self._next()

    def _to_bridge(self) -> None:
        """Hand the connection to aiohttp, starting with the requests not yet answered."""
        assert self.transport is not None
        handler = self._front.handler_factory()
        transport = _BridgeTransport(self, self.transport)
        self._bridge, self._bridge_transport = handler, transport
        self._handed = self._answered = 0
        handler.connection_made(transport)
        if self._paused:
            handler.pause_writing()
        for request in self._queue:
            self._hand(request)
            body = b"".join(request.body)
            if body:
                handler.data_received(request.body_bytes(body))
            if request.complete and request.chunked:
                handler.data_received(END_CHUNKS)
        self._queue.clear()

    def _hand(self, request: Incoming) -> None:
        assert self._bridge is not None
        request.fast = False
        request.chunked = any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in request.raw_headers
        )
        self._handed += 1
        self._bridge.data_received(request.head_bytes())

    def _take_back(self) -> None:
        """aiohttp has answered all it was given: the connection is the front's again."""
        assert self._bridge is not None and self._bridge_transport is not None
        self._bridge_transport.detach()
        self._bridge.connection_lost(None)  # it lets go (its close() no longer reaches the socket)
        self._bridge = self._bridge_transport = None

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.idle_since = asyncio.get_running_loop().time()
        self._front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._raw:
            assert self._bridge is not None
            self._bridge.data_received(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # never fast: the bridge has the head
            self._raw = True
            rest = data[upgrade.args[0]:]
            if rest and self._bridge is not None:
                self._bridge.data_received(rest)
        except httptools.HttpParserError as exc:
            self._bad_request(exc)

    def _bad_request(self, exc: Exception) -> None:
        """A request that cannot be parsed: 400 if nothing else is being answered, then close."""
        if self._task is None and (self._bridge is None or self._handed == self._answered):
            self.write(error_answer(400, f"malformed HTTP request: {exc}", keep_alive=False))
        log.debug("Error handling request from %s: malformed HTTP: %s", self.peer, exc)
        self.close()

    def eof_received(self) -> bool | None:
        if self._bridge is not None:
            return self._bridge.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.connections.discard(self)
        if self._bridge is not None:
            self._bridge.connection_lost(exc)
        if self._task is not None:
            self._task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the client closed the connection"))
            self._drained.exception()  # retrieved: nobody may be waiting any more

    def pause_writing(self) -> None:
        self._paused = True
        if self._bridge is not None:
            self._bridge.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self._bridge is not None:
            self._bridge.resume_writing()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._current = Incoming()

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        parser = self._parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.fast = not parser.should_upgrade() and self._front.lane.takes(request)
        if self._bridge is not None:
            if not request.fast or self._handed != self._answered:
                self._hand(request)  # stays with aiohttp while it still has answers to give
                return
            self._take_back()
        self._queue.append(request)
        if not request.fast:
            if len(self._queue) == 1 and self._task is None:
                self._to_bridge()
        elif request.expects_continue:
            self.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        if self._bridge is not None and not request.fast:
            self._bridge.data_received(request.body_bytes(body))
            return
        request.body.append(body)
        request.size += len(body)
        if request.fast and request.size > self._front.lane.max_body:
            request.fast = False  # aiohttp answers it (413)
            if self._queue and self._queue[0] is request and self._task is None:
                self._to_bridge()

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        self._current = None
        request.complete = True
        if self._bridge is not None and not request.fast:
            if request.chunked:
                self._bridge.data_received(END_CHUNKS)
            return
        self._next()


class Front:
    """The listener: connections, the fast lane, and aiohttp's handlers for the rest."""

    def __init__(self, lane: FastLane, handler_factory: Callable[[], web.RequestHandler]) -> None:  # type: ignore[type-arg]
        self.lane = lane
        self.handler_factory = handler_factory
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str | None, port: int, tls: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, ssl=tls, backlog=1024
        )
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close kept-alive connections idle for too long (aiohttp does this for bridged ones)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_SECONDS / 5)
            limit = loop.time() - IDLE_SECONDS
            for conn in [c for c in self.connections if c.idle and c.idle_since < limit]:
                conn.close()

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections; give requests in the fast lane ``grace``
        seconds to finish, then close theirs. Bridged connections are aiohttp's to end."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            busy = False
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
                elif not conn.bridged:
                    busy = True
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if not conn.bridged:
                conn.close()
