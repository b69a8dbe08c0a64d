"""The pooled HTTP/1.1 client every request to a model's server goes through: asyncio
protocols and httptools (llhttp).

Why not aiohttp's client (which the service keeps for health checks): on the bench machine
it costs ~290 µs of CPU per small proxied request; this one, which only sends bytes the lane
framed and hands back the answer as it arrives, ~25 µs (docs/performance.md).

One `Exchange` per request on a kept-alive `_Connection`; the body comes back either whole
(`read`) or chunk by chunk (`async for`), with the upstream's socket paused while the reader
is behind (backpressure: a slow client slows the model's stream instead of buffering it
here). Interim answers (`103 Early Hints`…) are handed on as they arrive.

What may be sent again is decided here, by one rule: only what the upstream provably did not
read. `NotSent` — the connection could not be opened. A *reset* before any byte of an answer:
the upstream's kernel answers data that its server never read with a RST — also when the
server had closed the connection just before the request arrived (llama-server closes ~40 µs
after the last chunk of every stream, measured: a pooled connection can be taken in that
instant; then its FIN arrives first, and the RST right after it). A server that read the
request and closed sends a FIN alone. So a close before any answer is looked at once more a
moment later (`RESET_WAIT`): with the RST it is sent again on a fresh connection, without
it the request is `UpstreamClosed`; a timeout is `TimeoutError`. Neither is ever repeated:
a generation must not run twice.

Which is why a connection that may be closing is not reused. llama-server reads and drops
what arrives after its last chunk (no RST): a request sent in those microseconds would be
lost. So a connection whose last answer was a stream is checked for a pending close before
it is reused (as is one idle for longer than `CHECK_IDLE`), and an upstream seen closing
its connections right after streams (`CLOSE_AFTER_STREAM`) has them closed by the pool
instead, from then on: its streams each get a fresh connection.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import logging
import select
import socket
import ssl
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

import httptools

from llama_swap.wire.headers import RESPONSE_DROP, RawFields, response_drop

log = logging.getLogger("llama_swap.proxy")

IDLE_SECONDS = 4.0  # llama-server (cpp-httplib) closes idle connections after 5 s: drop ours first
RESET_WAIT = 0.01  # how long a close before any answer is watched for the RST that proves the request unread
CHECK_IDLE = 0.5  # a pooled connection idle for longer is checked for a pending close before it is reused
CLOSE_AFTER_STREAM = 1.0  # an upstream closing a connection this soon after a stream does so after every stream
_RESETS = (errno.EPIPE, errno.ECONNRESET)  # SO_ERROR after a RST (EPIPE: after the peer's FIN)
HIGH_WATER = 256 * 1024  # bytes buffered before the upstream's socket is paused
LOW_WATER = 64 * 1024

Interim = Callable[[int, str, RawFields], None]
"""Told each interim (1xx) answer: status, reason, fields."""


class Upstream(NamedTuple):
    """Where a model's server listens and how to talk to it (read from its config once)."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    prefix: bytes  # path of the `proxy` URL, put before every request target
    host_header: bytes
    connect_timeout: float | None
    tls_timeout: float | None
    response_timeout: float | None  # `timeouts.responseHeader`
    keepalive: int  # seconds between TCP keep-alive probes (`timeouts.keepalive`); 0 = off
    idle: float | None  # seconds an idle connection is kept in the pool (`timeouts.idleConn`); None = no limit


def address(url: str, *, connect: float, tls_handshake: float, response_header: float, keepalive: int,
            idle_conn: int | None) -> Upstream:
    """An `Upstream` for a `proxy` URL and a model's `timeouts` (seconds; 0 = none; an unset
    `idleConn`: `IDLE_SECONDS`)."""
    parts = urlsplit(url)
    tls = _tls_context() if parts.scheme == "https" else None
    host = parts.hostname or "localhost"
    return Upstream(
        host, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/").encode("latin-1"),
        parts.netloc.rpartition("@")[2].encode("idna"), connect or None, tls_handshake or None,
        response_header or None, keepalive, IDLE_SECONDS if idle_conn is None else (idle_conn or None),
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One client context for every https upstream: the system's trust store, verified."""
    return ssl.create_default_context()


class NotSent(OSError):
    """The request was not written to the upstream: it may be sent again."""


class UpstreamClosed(ConnectionError):
    """The upstream closed (or reset) the connection before its answer was complete."""


class Exchange:
    """One request's answer: status and fields once `head` is done, then the body."""

    __slots__ = (
        "status", "reason", "raw_headers", "content_length", "content_type", "raw_content_type", "content_encoding",
        "keep_alive", "chunked", "drop", "received", "reset", "head", "on_interim", "_conn", "_chunks", "_size",
        "_waiter", "_done",
        "_error", "_whole", "_until_close", "bodiless",
    )

    def __init__(self, conn: _Connection, on_interim: Interim | None, bodiless: bool) -> None:
        self._conn = conn
        self.on_interim = on_interim
        self.status = 0
        self.reason = ""
        self.raw_headers: RawFields = []
        self.content_length: int | None = None
        self.content_type = ""  # media type only, lower case (e.g. "text/event-stream")
        self.raw_content_type = ""  # as sent
        self.content_encoding = "identity"
        self.keep_alive = False
        self.chunked = False  # a stream of unknown length
        self.drop = RESPONSE_DROP  # its fields not passed on (`headers.response_drop`)
        self.received = False  # a byte of an answer arrived
        self.reset = False  # the connection was reset (RST) rather than closed
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._whole = False
        self._until_close = False  # no length, not chunked: the body ends when the connection does
        self.bodiless = bodiless  # the answer to a HEAD request: its fields describe a body never sent

    @property
    def finished(self) -> bool:
        """The whole answer arrived and every chunk of it was taken by the reader."""
        return self._done and not self._chunks and self._error is None

    @property
    def complete(self) -> bool:
        """The whole answer has arrived (and not yet been taken)."""
        return self._done and self._error is None

    async def read(self) -> bytes:
        """The whole body (for answers of a known, small length)."""
        self._whole = True
        while not self._done:
            await self._wait()
        return self.take()

    def take(self) -> bytes:
        """The whole body of a `complete` answer; the connection goes back to the pool."""
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self.close()
        return body

    def __aiter__(self) -> Exchange:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk as it arrived; raises `UpstreamClosed` if the upstream broke off."""
        while not self._chunks:
            if self._done:
                raise StopAsyncIteration
            await self._wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size < LOW_WATER:
            self._conn.resume()
        return chunk

    def close(self) -> None:
        """Done with this answer: the connection goes back to the pool if the answer was read
        to its end, else it is closed (which is how an upstream learns to stop generating)."""
        self._conn.finish(self, reusable=self._done and self._error is None and not self._chunks)

    def take_over(self, protocol: asyncio.Protocol) -> tuple[asyncio.Transport, bytes]:
        """After a `101 Switching Protocols`: the connection leaves the pool for good and its
        bytes go to ``protocol`` from now on; the transport, and the bytes that came with the
        101 after its head."""
        return self._conn.hand_over(protocol)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._whole:
            self._conn.pause()
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._done:
            return
        if self._until_close and self.head.done() and isinstance(error, UpstreamClosed) and not self.reset:
            self._complete()  # a body delimited by the end of the connection (HTTP/1.0 style)
            return
        self._error = error
        if not self.head.done():
            self.head.set_exception(error)
        self._wake()


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an upstream; carries one `Exchange` at a time."""

    def __init__(self, pool: UpstreamClient, key: Upstream) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self._paused = False
        self.idle_since = 0.0  # when it went back to the pool
        self.after_stream = False  # its last answer was a stream (chunked)
        self._reason: list[bytes] = []
        self._raw_headers: RawFields = []
        self._socket: socket.socket | None = None
        self._switched = b""  # after a 101: what followed its head, until `hand_over`

    # -- used by the pool and the exchange

    def send(self, data: bytes, on_interim: Interim | None, bodiless: bool) -> Exchange:
        self.exchange = Exchange(self, on_interim, bodiless)
        assert self.transport is not None
        self.transport.write(data)
        return self.exchange

    def finish(self, exchange: Exchange, *, reusable: bool) -> None:
        if self.exchange is not exchange:
            return
        self.exchange = None
        self.resume()
        if (reusable and exchange.keep_alive and not exchange.bodiless and not self.closed
                and not (exchange.chunked and self.key in self._pool.closes_after_streams)):
            self.idle_since = asyncio.get_running_loop().time()
            self.after_stream = exchange.chunked
            self._pool.put(self)
        else:
            self.close()

    def hand_over(self, protocol: asyncio.Protocol) -> tuple[asyncio.Transport, bytes]:
        """The connection switched protocols: it is no longer the pool's (see `Exchange.take_over`)."""
        transport = self.transport
        assert transport is not None
        self.exchange = None
        self.closed = True
        self._pool.forget(self)
        transport.set_protocol(protocol)
        self._paused = False
        transport.resume_reading()
        rest, self._switched = self._switched, b""
        return transport, rest

    def alive(self) -> bool:
        """Whether nothing arrived on the idle connection (a close the event loop has not yet
        handled shows as readable)."""
        try:
            return self._socket is not None and not select.select((self._socket,), (), (), 0)[0]
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = self._socket = transport.get_extra_info("socket")
        if sock is not None and self.key.keepalive > 0:
            _keep_alive(sock, self.key.keepalive)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        exchange.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            exchange._fail(UpstreamClosed(f"invalid HTTP answer from the upstream: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade as exc:  # a 101: what follows is not HTTP
            exchange.keep_alive = False  # never pooled again
            self._switched = data[exc.args[0]:]
            self.pause()  # nothing more is read until the tunnel takes the connection over

    def eof_received(self) -> bool:
        """A close before any byte of the answer is held open for `RESET_WAIT`: see the
        module's docstring."""
        exchange = self.exchange
        if exchange is None or exchange.received or exchange.reset:
            return False
        if self._reset_seen():
            exchange.reset = True
            return False
        asyncio.get_running_loop().call_later(RESET_WAIT, self._closed_before_answer, exchange)
        return True

    def _closed_before_answer(self, exchange: Exchange) -> None:
        if self.exchange is exchange and self._reset_seen():
            exchange.reset = True
        self.close()

    def _reset_seen(self) -> bool:
        """Whether the kernel has been told by a RST that the upstream did not read what we sent."""
        try:
            return self._socket is not None and self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in _RESETS
        except OSError:
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self.exchange is None and self.after_stream:
            self._pool.closed_after_stream(self)
        exchange = self.exchange
        if exchange is not None:
            exchange.reset = exchange.reset or isinstance(exc, ConnectionResetError)
            exchange._fail(UpstreamClosed(f"the upstream closed the connection ({exc})" if exc else
                                          "the upstream closed the connection"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._reason.clear()
        self._raw_headers = []

    def on_status(self, status: bytes) -> None:
        self._reason.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim answer: the final one follows
            if exchange.on_interim is not None:
                exchange.on_interim(status, b"".join(self._reason).decode("latin-1"), self._raw_headers)
            return
        raw = self._raw_headers
        length = content_type = encoding = None
        chunked = False
        for name, value in raw:
            size = len(name)
            if size == 10 and name.lower() == b"connection":
                exchange.drop = response_drop(raw)
            elif size == 14 and name.lower() == b"content-length":
                length = value
            elif size == 12 and name.lower() == b"content-type":
                content_type = value
            elif size == 17 and name.lower() == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif size == 16 and name.lower() == b"content-encoding":
                encoding = value
        exchange.status = status
        exchange.reason = b"".join(self._reason).decode("latin-1")
        exchange.raw_headers = raw
        exchange.content_length = int(length) if length is not None and length.isdigit() else None
        if content_type is not None:
            exchange.raw_content_type = content_type.decode("latin-1")
            exchange.content_type = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
        if encoding is not None:
            exchange.content_encoding = encoding.decode("latin-1").strip().lower()
        exchange.keep_alive = self._parser.should_keep_alive()
        exchange.chunked = chunked
        bodiless = exchange.bodiless or status in (101, 204, 304)
        exchange._until_close = exchange.content_length is None and not chunked and not bodiless
        exchange.head.set_result(None)
        if exchange.bodiless:
            exchange._complete()  # llhttp would wait for the body the fields announce

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange._feed(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.head.done() and not exchange._done:
            exchange._complete()


def _keep_alive(sock: socket.socket, seconds: int) -> None:
    """TCP keep-alive probes every ``seconds`` on an idle upstream connection, as the Go
    version's dialer does with `timeouts.keepalive`: a vanished peer is noticed."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)
    except OSError:
        pass


class UpstreamClient:
    """Kept-alive connections per upstream, reused most recent first."""

    def __init__(self) -> None:
        self._idle: dict[Upstream, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self.closes_after_streams: set[Upstream] = set()  # upstreams whose connections end with each stream

    async def send(self, upstream: Upstream, data: bytes, bodiless: bool = False,
                   on_interim: Interim | None = None, *, fresh: bool = False) -> Exchange:
        """Send one framed request (head and body) and wait for the answer's head.

        ``bodiless``: the request is a HEAD (its answer's fields describe a body never sent);
        ``fresh``: on a new connection (an upgrade, which may take the connection over).
        Raises `NotSent` (nothing was written: the connection failed), `TimeoutError` (no
        answer within `response_timeout`), or `UpstreamClosed` (the upstream got the request
        and closed without answering).
        """
        resent = False
        while True:
            conn = None if fresh else self._take(upstream)
            if conn is None:
                conn = await self._connect(upstream)
            exchange = conn.send(data, on_interim, bodiless)
            try:
                if upstream.response_timeout:
                    async with asyncio.timeout(upstream.response_timeout):
                        await exchange.head
                else:
                    await exchange.head
            except UpstreamClosed:
                if exchange.reset and not exchange.received and not resent:
                    resent = True  # reset before any answer: the upstream never read it
                    continue
                raise
            except BaseException:
                exchange.close()
                raise
            return exchange

    def put(self, conn: _Connection) -> None:
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close_idle(self, upstream: Upstream) -> None:
        """Close the idle connections to an upstream that is about to be stopped: llama-server
        takes ~5x longer to exit on SIGTERM while a kept-alive connection is open."""
        for conn in self._idle.pop(upstream, []):
            conn.close()

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()

    def closed_after_stream(self, conn: _Connection) -> None:
        """An idle connection whose last answer was a stream was closed by the upstream: if
        that soon, it closes after every stream (llama-server does)."""
        if conn.key in self.closes_after_streams:
            return
        if asyncio.get_running_loop().time() - conn.idle_since < CLOSE_AFTER_STREAM:
            self.closes_after_streams.add(conn.key)
            log.info("%s:%d closes its connection after every stream: streams to it get a fresh one",
                     conn.key.host, conn.key.port)

    def _take(self, upstream: Upstream) -> _Connection | None:
        """The most recently used idle connection; ones idle for longer than the upstream's
        `idle` are closed (the upstream may be closing them right now), and one after a stream
        or idle for a while is checked for a close the loop has not handled yet."""
        idle = self._idle.get(upstream)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        limit = upstream.idle if upstream.idle is not None else float("inf")
        while idle:
            conn = idle.pop()
            if now - conn.idle_since > limit or (
                    (conn.after_stream or now - conn.idle_since > CHECK_IDLE) and not conn.alive()):
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, upstream: Upstream) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(upstream.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, upstream), upstream.host, upstream.port, ssl=upstream.tls,
                    server_hostname=upstream.host if upstream.tls is not None else None,
                    ssl_handshake_timeout=upstream.tls_timeout if upstream.tls is not None else None,
                )
        except TimeoutError as exc:
            raise NotSent(f"connecting timed out after {upstream.connect_timeout:g}s") from exc
        except OSError as exc:
            raise NotSent(exc.strerror or str(exc) or type(exc).__name__) from exc
        self._all.add(conn)
        return conn
