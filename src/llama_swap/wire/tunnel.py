"""Websockets: after the upstream's `101 Switching Protocols`, bytes both ways, unparsed.

A websocket is an HTTP/1.1 request that asks to switch protocols (RFC 6455 §4). Its head
goes to the upstream with its `Upgrade` and `Connection` fields (which every other request
loses as hop-by-hop), on a connection of its own; when the upstream answers 101, that head
reaches the client and from then on a `Tunnel` splices the two connections: what one side
sends the other is written, nothing parsed, nothing buffered beyond the sockets' own buffers
(when one side's send buffer is full, the other side is not read until it drains). Frames,
pings and the close handshake are the two ends' business. When either side closes, the
other is closed too. `Tunnels` knows every open tunnel by model, so that a model that stops
and a service that shuts down close theirs at once — a websocket may idle for hours.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from llama_swap.wire.headers import RESPONSE_DROP, RawFields, find
from llama_swap.wire.upstream import Exchange

SWITCHED_DROP = RESPONSE_DROP - {b"connection", b"upgrade"}  # a 101's fields the client must get


def has_token(fields: RawFields, name: bytes, token: bytes) -> bool:
    """Whether any field ``name`` (lower case) lists ``token`` (lower case), comma-separated."""
    size = len(name)
    return any(len(found) == size and found.lower() == name and token in
               (part.strip().lower() for part in value.split(b","))
               for found, value in fields)


def is_websocket(fields: RawFields) -> bool:
    """A websocket upgrade as the Go version tells one (`swaputil.IsWebSocketUpgrade`):
    `Connection` lists `upgrade` and `Upgrade` lists `websocket`, in any case."""
    return has_token(fields, b"connection", b"upgrade") and has_token(fields, b"upgrade", b"websocket")


def upgrade_fields(fields: RawFields) -> bytes:
    """The fields that ask the upstream to switch protocols, as the client asked (Go's
    reverse proxy drops the hop-by-hop fields and puts these two back)."""
    return b"Connection: Upgrade\r\nUpgrade: %s\r\n" % (find(fields, b"upgrade") or b"websocket")


class Client(Protocol):
    """The client's side (`wire.front.Connection`), as a tunnel uses it."""

    paused: bool  # its socket buffer is full: `drain` before writing more

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def take_raw(self, sink: Callable[[bytes], None]) -> bytes:
        """From now on the client's bytes go to ``sink``; those that came before it."""

    def raw_reading(self, wanted: bool) -> None:
        """Read the client's socket or not (the upstream's send buffer is full)."""


class Tunnel(asyncio.Protocol):
    """One switched connection pair; the upstream connection's protocol from `open` on."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._upstream: asyncio.Transport | None = None
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._drainer: asyncio.Task[None] | None = None  # waiting for the client to drain

    def open(self, exchange: Exchange) -> None:
        """Splice: the upstream's 101 ``exchange`` (whose head the client has) and the client."""
        self._upstream, first = exchange.take_over(self)
        if first:
            self.data_received(first)
        early = self._client.take_raw(self._from_client)
        if early:
            self._from_client(early)

    async def run(self) -> None:
        """Until either side closes (the client's leaving cancels this); then both are closed."""
        try:
            await asyncio.shield(self._ended)
        finally:
            self.close()

    def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        self._end()

    def _end(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    def _from_client(self, data: bytes) -> None:
        if self._upstream is not None and not self._ended.done():
            self._upstream.write(data)

    async def _drain_client(self) -> None:
        """The client's buffer was full: read the upstream again once it drained."""
        try:
            await self._client.drain()
        except ConnectionError:
            return  # the client is gone: the tunnel ends with its connection
        finally:
            self._drainer = None
        if self._upstream is not None and not self._ended.done():
            self._upstream.resume_reading()

    # ---------------------------------------------------------- the upstream's connection

    def data_received(self, data: bytes) -> None:
        if self._ended.done():
            return
        client = self._client
        client.write(data)
        if client.paused and self._drainer is None and self._upstream is not None:
            self._upstream.pause_reading()
            self._drainer = self._loop.create_task(self._drain_client())

    def eof_received(self) -> bool:
        self._end()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def pause_writing(self) -> None:
        self._client.raw_reading(False)

    def resume_writing(self) -> None:
        self._client.raw_reading(True)


class Tunnels:
    """The open tunnels, by model: closed with their model, or all at shutdown."""

    def __init__(self) -> None:
        self._by_model: dict[str, set[Tunnel]] = {}

    def add(self, model: str, tunnel: Tunnel) -> None:
        self._by_model.setdefault(model, set()).add(tunnel)

    def discard(self, model: str, tunnel: Tunnel) -> None:
        tunnels = self._by_model.get(model)
        if tunnels is not None:
            tunnels.discard(tunnel)
            if not tunnels:
                del self._by_model[model]

    def close(self, model: str) -> None:
        """``model`` is stopping: its tunnels end now (no connection outlives its model)."""
        for tunnel in list(self._by_model.get(model, ())):
            tunnel.close()

    def close_all(self) -> None:
        for model in list(self._by_model):
            self.close(model)
