"""Handing a client connection's requests to the aiohttp application, and taking it back.

The management API, the UI, logs and events are aiohttp handlers. When a request for one of
them reaches its turn, the front attaches an aiohttp `RequestHandler` to the connection
through a `BridgeTransport` (its writes reach the client's socket; its flow control is
merged with the front's) and feeds it the request as parsed. aiohttp's access-log hook
(`AnswerCounter`) tells the front when that answer is done; the front then goes on with the
next request, and detaches the handler when the next one is its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from llama_swap.wire.framing import END_CHUNKS, chunk
from llama_swap.wire.incoming import Incoming

HandlerFactory = Callable[[], web.RequestHandler]  # type: ignore[type-arg]


class Owner(Protocol):
    """The client connection (`wire.front.Connection`) a bridge is attached to."""

    def end(self) -> None:
        """Close once what was written has gone, without a reset."""

    def bridge_wants_reading(self, wanted: bool) -> None:
        """aiohttp's flow control, merged with the front's."""

    def answered_by_bridge(self) -> None:
        """aiohttp has finished the answer to the request it was handed."""


class BridgeTransport(asyncio.Transport):
    """The transport an aiohttp handler writes through: the client's socket, until the front
    takes the connection back (after which nothing the handler does reaches the socket)."""

    def __init__(self, conn: Owner, real: asyncio.Transport) -> None:
        super().__init__()
        self.conn = conn
        self._real = real
        self.attached = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.attached:
            self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self.attached:
            self._real.writelines(list_of_data)

    def is_closing(self) -> bool:
        return not self.attached or self._real.is_closing()

    def close(self) -> None:
        if self.attached:
            self.conn.end()

    def abort(self) -> None:
        if self.attached:
            self._real.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self.attached:
            self.conn.bridge_wants_reading(False)

    def resume_reading(self) -> None:
        if self.attached:
            self.conn.bridge_wants_reading(True)

    def is_reading(self) -> bool:
        return self.attached and self._real.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False


class Bridge:
    """One aiohttp request handler attached to a client connection."""

    def __init__(self, conn: Owner, real: asyncio.Transport, factory: HandlerFactory, *,
                 writing_paused: bool) -> None:
        self.handler = factory()
        self.transport = BridgeTransport(conn, real)
        self.handler.connection_made(self.transport)
        if writing_paused:
            self.handler.pause_writing()

    def hand(self, request: Incoming) -> None:
        """Give the handler a request: its head as received, and the body received so far
        (llhttp hands bodies over de-chunked: they are framed again as they came)."""
        request.handed = True
        self.handler.data_received(request.head_bytes())
        if request.body:
            self.body(request, b"".join(request.body))
            request.body.clear()
        if request.complete:
            self.end(request)

    def body(self, request: Incoming, data: bytes) -> None:
        self.handler.data_received(chunk(data) if request.chunked else data)

    def end(self, request: Incoming) -> None:
        if request.chunked:
            self.handler.data_received(END_CHUNKS)

    def raw(self, data: bytes) -> None:
        """Bytes after an upgrade, unparsed."""
        self.handler.data_received(data)

    def detach(self) -> None:
        """The front takes the connection back: the handler lets go of it."""
        self.transport.attached = False
        self.handler.connection_lost(None)


class AnswerCounter(AbstractAccessLogger):
    """aiohttp's hook after each finished answer (its access log, which is otherwise off):
    tells a bridged connection that the request it was handed is answered."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        transport = request.transport
        if isinstance(transport, BridgeTransport) and transport.attached:
            transport.conn.answered_by_bridge()

    @property
    def enabled(self) -> bool:
        return True
