"""A pooled HTTP/1.1 client for the fast lane: asyncio protocols and httptools (llhttp).

Why not aiohttp's client (which the rest of the service uses): on the bench machine it
costs ~290 µs of CPU per small proxied request, three quarters of a whole aiohttp proxy;
this one, which only has to send bytes the front already framed and hand back the answer
as it arrives, costs ~25 µs (docs/performance.md). Parsing is llhttp's, through httptools.

One `Exchange` per request on a kept-alive `_Connection`; the body comes back either
whole (`read`) or chunk by chunk (`async for`), with the upstream's socket paused while the
reader is behind (backpressure, so a slow client slows the model's stream instead of
buffering it here). A connection is reused only when its answer was read to the end.
"""

from __future__ import annotations

import asyncio
import collections

import httptools

IDLE_SECONDS = 4.0  # llama-server (cpp-httplib) closes idle connections after 5 s: drop ours first
HIGH_WATER = 256 * 1024  # bytes buffered before the upstream's socket is paused
LOW_WATER = 64 * 1024


class UpstreamClosed(ConnectionError):
    """The upstream closed (or reset) the connection before its answer was complete."""


class Exchange:
    """One request's answer: status and headers once `head` is done, then the body."""

    __slots__ = (
        "status", "reason", "raw_headers", "content_length", "content_type", "raw_content_type", "content_encoding",
        "keep_alive", "received", "head", "_conn", "_chunks", "_size", "_waiter", "_done", "_error", "_whole",
        "_until_close",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.content_type = ""  # media type only, lower case (e.g. "text/event-stream")
        self.raw_content_type = ""  # as sent
        self.content_encoding = "identity"
        self.keep_alive = False
        self.received = False  # any byte of the answer arrived (a stale connection sends none)
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._whole = False
        self._until_close = False  # no length, not chunked: the body ends when the connection does

    async def read(self) -> bytes:
        """The whole body (for answers of a known, small length)."""
        self._whole = True
        while not self._done:
            await self._wait()
        body = b"".join(self._chunks)
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
        if self._until_close and self.head.done() and isinstance(error, UpstreamClosed):
            self._complete()  # a body delimited by the end of the connection (HTTP/1.0 style)
            return
        self._error = error
        if not self.head.done():
            self.head.set_exception(error)
        self._wake()


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an upstream; carries one `Exchange` at a time."""

    def __init__(self, pool: UpstreamClient, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self._paused = False
        self.idle_since = 0.0  # when it went back to the pool
        self._reason: list[bytes] = []
        self._raw_headers: list[tuple[bytes, bytes]] = []

    # -- used by the pool and the exchange

    def send(self, data: bytes) -> Exchange:
        self.exchange = Exchange(self)
        assert self.transport is not None
        self.transport.write(data)
        return self.exchange

    def finish(self, exchange: Exchange, *, reusable: bool) -> None:
        if self.exchange is not exchange:
            return
        self.exchange = None
        self.resume()
        if reusable and exchange.keep_alive and not self.closed:
            self.idle_since = asyncio.get_running_loop().time()
            self._pool.put(self)
        else:
            self.close()

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

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self.exchange is not None:
            self.exchange._fail(UpstreamClosed(f"the upstream closed the connection ({exc})" if exc else
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
        if 100 <= status < 200:  # an interim answer (e.g. 100 Continue): the real one follows
            return
        raw = self._raw_headers
        length = content_type = encoding = None
        chunked = False
        for name, value in raw:
            size = len(name)
            if size == 14 and name.lower() == b"content-length":
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
        exchange._until_close = exchange.content_length is None and not chunked and status not in (204, 304)
        exchange.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange._feed(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.head.done() and not exchange._done:
            exchange._complete()


class UpstreamClient:
    """Kept-alive connections per upstream (host, port), reused most recent first."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()

    async def send(self, host: str, port: int, data: bytes, *, connect_timeout: float | None = None) -> Exchange:
        """Send one framed request (head and body; never HEAD: its answer would be read as
        having the body its headers announce) and wait for the answer's head.

        Raises `OSError` (refused, unreachable, `TimeoutError` on the connect deadline) or
        `UpstreamClosed` when no answer began. A reused connection that the upstream had
        closed meanwhile is retried once on a new one.
        """
        key = (host, port)
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect_timeout)
            exchange = conn.send(data)
            try:
                await exchange.head
            except UpstreamClosed:
                if reused and not exchange.received:
                    continue  # a pooled connection the upstream closed as it was reused
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

    def close_idle(self, host: str, port: int) -> None:
        """Close the idle connections to an upstream that is about to be stopped: llama-server
        takes ~5x longer to exit on SIGTERM while a kept-alive connection is open."""
        for conn in self._idle.pop((host, port), []):
            conn.close()

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        """The most recently used idle connection; older ones than `IDLE_SECONDS` are closed
        (the upstream may be closing them right now) rather than reused."""
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = asyncio.get_running_loop().time() - IDLE_SECONDS
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since < stale:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(lambda: _Connection(self, key), key[0], key[1])
        self._all.add(conn)
        return conn
