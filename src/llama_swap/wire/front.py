"""The listening socket: HTTP/1.1 connections parsed with httptools (llhttp), held to RFC 9112.

Every connection is a `Connection`: it parses requests, keeps them in arrival order, and has
each answered in turn — by the *lane* (a request for a model: `server/lane.py`) or, for the
management API, the UI, logs and events, by the aiohttp application through a bridge
(`wire/bridge.py`). Answers leave in the order the requests came, however they are served.

What a client sends is bounded before anything else looks at it (the model is uvicorn's
`httptools_impl.py`, h11 and aiohttp's `web_protocol.py`):
- the request line and fields together (`maxHeaderKB`: 431), the body (`maxBodyMB`: 413);
- time: a head must arrive within `clientTimeouts.header` of its first byte, a body must not
  stall for `clientTimeouts.body` (408), an idle kept-alive connection is closed after
  `clientTimeouts.idle` — whichever side served its last request;
- reading: a request pipelined behind one still being answered stops the reading of the
  socket until its turn (back-pressure), so what is buffered is bounded by one read;
- framing (RFC 9112): one `Host` in HTTP/1.1 (400); HTTP/1.0 with `Transfer-Encoding` is
  answered and the connection closed (§6.1); versions other than 1.0 and 1.1 get 505;
  `Expect` other than `100-continue` gets 417, and `100 Continue` is sent only when the
  request's turn has come; trailer fields never join the head; nothing after a request
  that ends the connection (`Connection: close`, HTTP/1.0) is read.
A request that cannot be parsed or is refused gets its error only after every request before
it is answered, and the connection is then closed: no answer is lost to a later error. A
lane that fails unexpectedly answers 500 if nothing of its answer was sent yet.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import Callable, Mapping, NamedTuple, Protocol

import httptools

from llama_swap.errors import error_body
from llama_swap.wire.bridge import Bridge, HandlerFactory
from llama_swap.wire.framing import CLOSE, CONTINUE, head, json_answer
from llama_swap.wire.headers import RawFields, host_problem, response_drop
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.tunnel import is_websocket

log = logging.getLogger("llama_swap.server")

# The request fields the front reads, by their lower-case name (one lookup per field).
_HOST, _LENGTH, _TYPE, _EXPECT, _CODING = 1, 2, 3, 4, 5
_READ = {b"host": _HOST, b"content-length": _LENGTH, b"content-type": _TYPE, b"expect": _EXPECT,
         b"transfer-encoding": _CODING}

_PARSER_STOPS = (httptools.HttpParserError, httptools.HttpParserUpgrade)  # what `feed_data` raises

SWEEP_SECONDS = 0.5  # how often connections are checked against the client timeouts
LINGER_SECONDS = 2.0  # after its last answer, how long a connection reads (and drops) what the client still sends


class Limits(NamedTuple):
    """What one client may send and how long it may take (0 = no limit)."""

    max_head: int  # bytes of request line and fields
    max_body: int  # bytes of body
    header_timeout: float  # seconds from a head's first byte to its end
    body_timeout: float  # seconds a body may go without a byte
    idle_timeout: float  # seconds a kept-alive connection may wait for its next request


class Lane(Protocol):
    """Whoever serves the requests the front does not hand to aiohttp."""

    @property
    def limits(self) -> Limits: ...

    def takes(self, request: Incoming) -> bool:
        """By its head: whether the lane serves ``request`` (else the aiohttp app does)."""

    async def serve(self, request: Incoming, conn: Connection) -> None:
        """Answer the complete ``request`` on ``conn``."""


class Refused(Exception):
    """A request the front answers with an error itself (then closes the connection)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Ends(Exception):
    """Raised by the parser's callback at the end of a request after which nothing more is
    read, so that llhttp stops there (it would parse what follows an HTTP/1.0 request with
    `Transfer-Encoding`, which claims to keep the connection alive)."""


def error_answer(status: int, message: str, headers: Mapping[str, str] | None = None, *,
                 connection: bytes | None) -> bytes:
    """A whole answer carrying the service's own error."""
    return json_answer(status, error_body(message, status), headers, connection=connection)


def too_large(size: int | None, limit: int) -> Refused:
    """413 naming the limit and the key that sets it."""
    what = f"{size} bytes exceeds" if size is not None else "it exceeds"
    return Refused(413, f"request body too large: {what} the {limit >> 20} MiB limit (maxBodyMB)")


def _head_size(request: Incoming) -> int:
    """The bytes of a parsed head, give or take its separators."""
    return len(request.target) + 16 + sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


class Connection(asyncio.Protocol):
    """One client connection: parses requests and has them answered in order."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.sent = False  # part of the current answer was written (a failure can no longer answer)
        self._head_only = False  # the answer being written is to a HEAD: its head goes out, no content
        self._head_sent = False  # ... and that head has gone: what follows is dropped
        self._parser = httptools.HttpRequestParser(self)
        self._limits = front.lane.limits
        self._current: Incoming | None = None  # being received
        self._queue: collections.deque[Incoming] = collections.deque()  # received, not answered; [0]'s turn
        self._task: asyncio.Task[None] | None = None  # the lane serving _queue[0]
        self._bridge: Bridge | None = None
        self._raw = False  # after an upgrade: what follows is not parsed
        self._upgrade: Incoming | None = None  # the request that asked for it
        self._raw_sink: Callable[[bytes], None] | None = None  # a websocket's tunnel (`take_raw`)
        self._early = b""  # a websocket's bytes that came with its head, before its tunnel
        self._closing = False  # nothing more is read: answer what is queued, then close
        self._error: bytes | None = None  # the answer to give once all before it are answered
        self._head_left: int | None = 0  # bytes the head being received may still take; None in a body
        self._ended_in_read = False  # a request ended in the bytes being parsed
        self._fields: RawFields = []  # where llhttp's fields go: the head's, or trailers
        self._head_unmetered = False  # the head being parsed began in such bytes: `data_received` did not count them
        self._head_started = 0.0
        self._last_read = 0.0
        self.idle_since = 0.0
        self._front_reads = True
        self._bridge_reads = True
        self._reading = True
        self.paused = False  # the client's socket buffer is full: `drain` before writing more
        self._drained: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None  # while ending: the close that ends it
        self._lost = True  # no transport to write to (until connected; again once closed)
        self._loop = asyncio.get_running_loop()

    # -------------------------------------------------------------- writing (the lane's side)

    def write(self, data: bytes) -> None:
        self.sent = True
        if self._head_only:
            data = self._head_of(data)
        if not self._lost and data:
            self.transport.write(data)  # type: ignore[union-attr]

    def _head_of(self, data: bytes) -> bytes:
        """An answer to HEAD has no content (RFC 9110 §9.3.2), whoever wrote it (an error, a
        load's answer, a relayed upstream answer): its head is sent, the rest never is — on a
        kept-alive connection a stray body would be read as the start of the next answer."""
        if self._head_sent:
            return b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data  # the head goes on in the next write
        self._head_sent = True
        return data[:end + 4]

    def interim(self, data: bytes) -> None:
        """An interim (1xx) answer: not part of the answer proper."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def interim_answer(self, status: int, reason: str, fields: RawFields) -> None:
        """An upstream's interim answer (`103 Early Hints`…), passed on (RFC 9110 §15.2)."""
        self.interim(head(status, reason, fields, drop=response_drop(fields)))

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full (a slow reader slows the relay)."""
        if self.paused:
            waiter = self._drained = self._loop.create_future()
            await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def end(self) -> None:
        """Close after the last answer without losing it: closing a socket whose input was
        not all read sends a RST, on which the client's kernel drops what the client has not
        read yet — the end of that answer. So: half-close (a FIN after the answer), drop
        whatever the client still sends, and close at its EOF or after `LINGER_SECONDS`."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._linger is not None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._closing = True
        transport.write_eof()
        self._linger = self._loop.call_later(LINGER_SECONDS, transport.close)
        self._front_reads = self._bridge_reads = True
        self._apply_reading()

    @property
    def idle(self) -> bool:
        """Nothing being received, waiting or answered."""
        return not self._queue and self._current is None and self._task is None

    # -------------------------------------------------------------- turns

    def _next(self) -> None:
        """Give the request whose turn it is what it needs: an answer, or the client's go-ahead.
        The socket is read while at most one request is received and not answered."""
        if self._task is not None or self._closing and self._finish():
            return
        queue = self._queue
        if not queue:
            self.idle_since = self._last_read = self._head_started = self._loop.time()
            if not self._front_reads:
                self._front_wants_reading(True)
            return
        if self._front_reads != (len(queue) == 1):
            self._front_wants_reading(len(queue) == 1)
        request = queue[0]
        if request.lane:
            if self._bridge is not None:
                self._bridge.detach()
                self._bridge = None
                self.bridge_wants_reading(True)
            if request.complete:
                self._serve_now(request)
            elif request.expects_continue and request.version == "1.1":
                request.expects_continue = False
                self.interim(CONTINUE)
        elif not request.handed:
            if self._bridge is None:
                assert self.transport is not None
                self._bridge = Bridge(self, self.transport, self._front.handler_factory, writing_paused=self.paused)
            self._bridge.hand(request)

    def _serve_now(self, request: Incoming) -> None:
        self.sent = False
        self._head_only = request.method == b"HEAD"
        self._head_sent = False
        self._task = self._loop.create_task(self._serve(request))

    def _finish(self) -> bool:
        """While closing: once nothing is left to answer, give the pending error and close."""
        if self._queue or self._task is not None:
            return False
        if self._error is not None:
            self.write(self._error)
            self._error = None
        self.end()
        return True

    async def _serve(self, request: Incoming) -> None:
        try:
            await self._front.lane.serve(request, self)
        except asyncio.CancelledError:  # the client went away
            return
        except Exception as exc:
            log.exception("unhandled error serving %s %s", request.method.decode("latin-1"),
                          request.target.decode("latin-1"))
            if self.sent:
                self.close()  # a half-sent answer must not pass for whole
            else:
                self.write(error_answer(500, f"internal error: {type(exc).__name__}: {exc}", connection=CLOSE))
                self.end()
            return
        finally:
            self._task = None
            self._head_only = False
        self._answered(request)

    def _answered(self, request: Incoming) -> None:
        if self._queue and self._queue[0] is request:
            self._queue.popleft()
        if not request.keep_alive or not request.complete:
            self._closing = True
        if not self._lost:
            self._next()

    def answered_by_bridge(self) -> None:
        """aiohttp has finished the answer to the request it was handed (told from inside
        its handler's task: the front goes on once that call has returned)."""
        if self._queue and self._queue[0].handed:
            self._loop.call_soon(self._answered, self._queue[0])

    # -------------------------------------------------------------- refusing

    def _refuse(self, refusal: Refused) -> None:
        """Stop reading; the refusal is answered after everything before it, then close."""
        log.debug("Error handling request from %s: %d %s", self.peer, refusal.status, refusal.message)
        request = self._current
        self._current = None
        if request is not None and request.handed:  # aiohttp has it: its answer cannot be ours
            self.close()
            return
        if request is not None and request in self._queue:
            self._queue.remove(request)
        self._stop_reading()
        self._error = error_answer(refusal.status, refusal.message, connection=CLOSE)
        self._next()

    def _stop_reading(self) -> None:
        self._closing = True
        self._front_wants_reading(False)

    # -------------------------------------------------------------- reading

    def _front_wants_reading(self, wanted: bool) -> None:
        self._front_reads = wanted and not self._closing
        self._apply_reading()

    def bridge_wants_reading(self, wanted: bool) -> None:
        self._bridge_reads = wanted
        self._apply_reading()

    def _apply_reading(self) -> None:
        wanted = self._front_reads and self._bridge_reads
        if wanted != self._reading and self.transport is not None and not self.transport.is_closing():
            self._reading = wanted
            if wanted:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if self._closing:
            return
        if self._raw:
            self._received_raw(data)
            return
        left = self._head_left
        if left is not None:
            if len(data) > left:
                self._past_head_budget(data, left)
                return
            self._head_left = left - len(data)
        self._feed(data)

    def _past_head_budget(self, data: bytes, left: int) -> None:
        """More bytes than the head being received may still take: the head must end within
        ``left`` of them, or it is refused (431) before llhttp buffers any more of it."""
        while data:
            self._feed(data[:left])
            if self._closing or self._raw:
                return
            if self._head_left is not None:
                self._refuse(self._head_too_large())
                return
            data = data[left:]
            left = self._head_left
            if left is None or len(data) <= left:
                if left is not None:
                    self._head_left = left - len(data)
                self._feed(data)
                return

    def _head_too_large(self) -> Refused:
        return Refused(431, f"request head too large: over the {self._limits.max_head >> 10} KiB limit for the "
                            "request line and headers (maxHeaderKB)")

    def _feed(self, data: bytes) -> None:
        self._ended_in_read = False
        try:
            self._parser.feed_data(data)
        except _PARSER_STOPS as exc:
            self._parse_failed(exc, data)

    def _parse_failed(self, exc: Exception, data: bytes) -> None:
        """llhttp stopped: an upgrade, one of the callbacks below refusing, or bad bytes."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            self._upgraded(data[exc.args[0]:])
        elif isinstance(exc, httptools.HttpParserCallbackError):
            cause = exc.__context__
            if isinstance(cause, _Ends):
                return
            if not isinstance(cause, Refused):
                log.error("error parsing a request from %s", self.peer, exc_info=cause)
                cause = Refused(500, f"internal error: {type(cause).__name__}: {cause}")
            self._refuse(cause)
        elif self._closing:
            return
        elif "HTTP version" in str(exc):
            self._refuse(Refused(505, "unsupported HTTP version: use HTTP/1.1"))
        else:
            self._refuse(Refused(400, f"malformed HTTP request: {exc}"))

    def _upgraded(self, rest: bytes) -> None:
        """After a request asking to switch protocols, the bytes are no longer HTTP: aiohttp
        gets them raw; the lane tunnels a websocket once its upstream agreed (`take_raw`:
        until then the socket is not read), and answers any other upgrade as a plain request.
        Either way the connection ends with that request."""
        self._raw = True
        request = self._queue[-1] if self._queue else None
        if request is None or not request.upgrade:
            return
        self._upgrade = request
        if not request.lane:
            self._received_raw(rest)
            return
        request.end_connection()
        if is_websocket(request.raw_headers):
            self._early = rest
            self._front_wants_reading(False)
        else:
            self._stop_reading()

    def take_raw(self, sink: Callable[[bytes], None]) -> bytes:
        """A websocket's tunnel is open: the client's bytes go to ``sink`` from now on; those
        that came with its head are returned."""
        self._raw_sink = sink
        early, self._early = self._early, b""
        self._front_wants_reading(True)
        return early

    def raw_reading(self, wanted: bool) -> None:
        """A tunnel's flow control: the upstream's send buffer is full (or drained)."""
        self._front_wants_reading(wanted)

    def _received_raw(self, data: bytes) -> None:
        request = self._upgrade
        if request is None or not data:
            return
        if request.handed:
            self._bridge.raw(data)  # type: ignore[union-attr]
        elif self._raw_sink is not None:
            self._raw_sink(data)
        else:  # its turn has not come: given with its head
            request.body.append(data)

    def eof_received(self) -> bool | None:
        if self._bridge is not None and self._linger is None:
            return self._bridge.handler.eof_received()
        return None

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._lost = False
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.idle_since = self._last_read = self._loop.time()
        self._head_left = self._limits.max_head
        self._front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._front.connections.discard(self)
        if self._linger is not None:
            self._linger.cancel()
        if self._bridge is not None:
            self._bridge.handler.connection_lost(exc)
        if self._task is not None:
            self._task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the client closed the connection"))
            self._drained.exception()  # retrieved: nobody may be waiting any more

    def pause_writing(self) -> None:
        self.paused = True
        if self._bridge is not None:
            self._bridge.handler.pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        if self._bridge is not None:
            self._bridge.handler.resume_writing()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -------------------------------------------------------------- timeouts (the front's sweep)

    def check_time(self, now: float) -> None:
        """Refuse a request that takes its client too long to send (408), close a connection
        idle for too long. Only while the connection waits for its client: a request
        waiting behind an answer in progress is not timed."""
        if self._closing or self._raw or self._task is not None:
            return
        request = self._current
        if self._queue and self._queue[0] is not request:
            return  # an answer is in progress (aiohttp's): the client is waiting for us
        limits = self._limits
        if request is None:
            if not self._queue and limits.idle_timeout and now - max(self.idle_since, self._last_read) > limits.idle_timeout:
                self.close()
        elif not request.head_done:
            if limits.header_timeout and now - self._head_started > limits.header_timeout:
                self._time_out("the request line and headers", "clientTimeouts.header", limits.header_timeout)
        elif self._reading and limits.body_timeout and now - self._last_read > limits.body_timeout:
            self._time_out("the request body", "clientTimeouts.body", limits.body_timeout)

    def _time_out(self, what: str, key: str, seconds: float) -> None:
        self._refuse(Refused(408, f"request timeout: {what} did not arrive within {seconds:g}s ({key})"))

    # -------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._current = request = Incoming()
        self._fields = request.raw_headers
        self._head_unmetered = self._ended_in_read
        self._head_started = self._last_read

    def on_url(self, url: bytes) -> None:
        self._current.target += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        parser = self._parser
        self._head_left = None
        self._fields = []  # trailer fields, after a chunked body, never join the head
        self._limits = limits = self._front.lane.limits
        request.head_done = True
        if self._head_unmetered and _head_size(request) > limits.max_head:
            raise self._head_too_large()
        request.method = method = parser.get_method()
        request.version = version = parser.get_http_version()
        if not parser.should_keep_alive():
            request.end_connection()
        elif version == "1.0":
            request.connection = b"keep-alive"  # an HTTP/1.0 client is told the connection stays
        coding = None
        hosts = 0
        for name, value in request.raw_headers:
            lower = name.lower()
            if lower not in _READ:
                continue
            known = _READ[lower]
            if known == _HOST:
                hosts += 1
            elif known == _LENGTH:
                request.content_length = int(value)  # llhttp has checked it is one number
            elif known == _TYPE:
                request.content_type = value
            elif known == _EXPECT:
                if value.strip().lower() != b"100-continue":
                    raise Refused(417, f"unsupported Expect: {value.decode('latin-1')!r} (only 100-continue)")
                request.expects_continue = True
            else:
                coding = value
        if version != "1.1" and version != "1.0":
            raise Refused(505, f"unsupported HTTP version {version}: use HTTP/1.1")
        if hosts != 1 and (problem := host_problem(hosts, version)) is not None:
            raise Refused(400, problem)
        if coding is not None:
            request.chunked = True  # llhttp accepts only `chunked` as the last coding
            if version == "1.0":
                request.end_connection()  # RFC 9112 §6.1: faulty framing, close after it
        if method == b"CONNECT":
            raise Refused(405, "CONNECT is not supported: llama-swap is not a forward proxy")
        if request.content_length is not None and request.content_length > limits.max_body:
            raise too_large(request.content_length, limits.max_body)
        request.upgrade = parser.should_upgrade()
        request.lane = self._front.lane.takes(request)
        self._queue.append(request)
        if len(self._queue) > 1:
            self._front_wants_reading(False)  # pipelined: read on when its turn comes
        elif not request.lane or request.expects_continue:
            self._next()  # aiohttp gets it now; a client waiting for `100 Continue` gets it now

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        request.size += len(body)
        if request.size > self._limits.max_body:
            raise too_large(None, self._limits.max_body)
        if request.handed:
            self._bridge.body(request, body)  # type: ignore[union-attr]
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        self._current = None
        self._head_left = self._limits.max_head
        self._ended_in_read = True  # what follows in this read was not counted against the next head
        request.complete = True
        if request.handed:
            self._bridge.end(request)  # type: ignore[union-attr]
        elif self._queue and self._queue[0] is request:
            if request.lane and self._bridge is None and self._task is None:
                self._serve_now(request)  # the common case: nothing else to see to
            else:
                self._next()
        if not request.keep_alive and not request.upgrade:
            self._stop_reading()
            raise _Ends  # nothing after it is parsed


class Front:
    """The listener: its connections, the lane, and aiohttp's handlers for the rest."""

    def __init__(self, lane: Lane, handler_factory: HandlerFactory) -> None:
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

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        """Apply the client timeouts (`Connection.check_time`) to every connection."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for conn in list(self.connections):
                conn.check_time(now)

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections; give requests being answered ``grace``
        seconds to finish, then close theirs."""
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
                else:
                    busy = True
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()

