"""A websocket to a model's server: what it may do to the model, and its one exchange.

As in the Go version (`router.baseRouter.ServeHTTP`, `swaputil.ShouldIgnoreWebsocket`):
- by default a websocket is a request like any other: it is admitted by the router (it
  starts the model, counts toward `concurrencyLimit`), holds the model's lease for as long
  as its tunnel is open (no eviction, no TTL), and is an in-flight request meanwhile;
- with `compat.ignoreWebsockets` (forced for `comfyui_auto`) it is outside the scheduler:
  it neither starts nor holds the model and is not accounted; a model that is not ready is
  a 409, and when the model stops its tunnels are closed (`Tunnels.close`).
The upstream's answer other than 101 is relayed like any answer; a 101 opens the tunnel.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from llama_swap.errors import HTTPError
from llama_swap.process import ProcessState
from llama_swap.proxy import Call, deliver, unavailable
from llama_swap.routing.names import PeerModel
from llama_swap.server.request import Handling
from llama_swap.server.service import Service
from llama_swap.wire.framing import head
from llama_swap.wire.front import Connection, error_answer
from llama_swap.wire.headers import REQUEST_DROP, RawFields, request_head
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.relay import Tap
from llama_swap.wire.tunnel import SWITCHED_DROP, Tunnel, upgrade_fields
from llama_swap.wire.upstream import NotSent, Upstream, UpstreamClosed

SWITCHED = 101


class _Unaccounted:
    """The tap of an ignored websocket: nothing about it is recorded (as in the Go version)."""

    cancelled = False
    error: str | None = None

    def respond(self, status: int, content_type: str, content_encoding: str, headers: RawFields) -> None:
        pass

    def chunk(self, data: bytes) -> None:
        pass


async def serve_ignored(service: Service, call: Call, request: Incoming, conn: Connection) -> None:
    """`compat.ignoreWebsockets`: served only by a model that is ready, without its lease."""
    process = service.processes[call.model]
    if process.state is not ProcessState.READY:
        message = (f"model '{call.model}' is not loaded; ignored websocket requests (compat.ignoreWebsockets) "
                   "do not start it")
        conn.write(error_answer(409, message, connection=request.connection))
        return
    try:
        await exchange(service, process.upstream, call, request, conn, _Unaccounted(), ready=process.is_ready)
    except HTTPError as exc:
        if not conn.sent:
            conn.write(error_answer(exc.status, exc.message, exc.headers, connection=request.connection))


async def serve_leased(service: Service, call: Call, request: Incoming, conn: Connection, handling: Handling) -> None:
    """A websocket like any request: admitted, and holding the model until its tunnel ends."""
    router = service.router
    ticket = router.admit(call.model, counted=True)
    lease = router.granted(ticket) or await router.wait(ticket)
    try:
        process = lease.process
        handling.status = await exchange(service, process.upstream, call, request, conn, handling.tracked,
                                         ready=process.is_ready)
    finally:
        router.release(lease)


async def serve_peer(service: Service, peer: PeerModel, call: Call, request: Incoming, conn: Connection,
                     handling: Handling) -> None:
    """A websocket to a peer's model: with the peer's key, as any peer request."""
    route = peer.route
    handling.status = await exchange(service, route.upstream, call._replace(strip=call.strip | route.replaced),
                                     request, conn, handling.tracked, ready=_always, extra=route.key_fields)


def _always() -> bool:
    return True


async def exchange(service: Service, upstream: Upstream, call: Call, request: Incoming, conn: Connection, tap: Tap,
                   *, ready: Callable[[], bool], extra: bytes = b"") -> int:
    """Send the upgrade on a connection of its own; relay a refusal, or tunnel after a 101
    until either side closes (or ``ready`` turns false: the model stops). The status to
    account for it."""
    body = call.body
    fields = request.raw_headers
    head_bytes = request_head(request.method, upstream.prefix + call.target, fields, upstream.host_header,
                              REQUEST_DROP | call.strip, conn.peer, len(body) if body else None, extra)
    try:
        answer = await service.upstreams.send(upstream, head_bytes[:-2] + upgrade_fields(fields) + b"\r\n" + body,
                                              fresh=True)
    except (NotSent, UpstreamClosed, TimeoutError) as exc:
        raise unavailable(call, request, exc) from exc
    if answer.status != SWITCHED:
        return await deliver(answer, conn, tap, request, call.model)
    tap.respond(SWITCHED, "", "identity", answer.raw_headers)
    conn.write(head(SWITCHED, answer.reason, answer.raw_headers, drop=SWITCHED_DROP))
    tunnel = Tunnel(conn)
    tunnel.open(answer)
    service.tunnels.add(call.model, tunnel)
    try:
        if not ready():
            tunnel.close()  # the model began to stop while the upgrade was on its way
        await tunnel.run()
    except asyncio.CancelledError:
        if tap.cancelled:
            raise  # an operator's cancel: the request skeleton closes the connection
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # the client closed: a websocket's end
    finally:
        service.tunnels.discard(call.model, tunnel)
    return SWITCHED
