"""The hot path: a request granted its model goes to that model's server, and the answer back.

`forward` holds the model through the router (its lease: concurrency limit, TTL, no eviction
while in use), sends the request through the pooled `UpstreamClient` and relays the answer.
It applies the one replay rule: a request is sent again only when the upstream provably did
not get it (`NotSent`: the connection was refused, or the pooled one was already gone) and
its process has died — then the crash is handled by the router (the model is restarted) and
the request sent once more. An upstream that got the request and failed before answering is
a 502, never a second generation; timeouts are never replayed either.
"""

from __future__ import annotations

import logging
from typing import Coroutine, NamedTuple

from llama_swap.errors import HTTPError
from llama_swap.process import ModelProcess
from llama_swap.routing.router import Router
from llama_swap.wire.front import Connection
from llama_swap.wire.headers import REQUEST_DROP, request_head
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.relay import BrokeOff, Tap, answer_now, relay
from llama_swap.wire.upstream import Exchange, NotSent, UpstreamClient, UpstreamClosed

log = logging.getLogger("llama_swap.proxy")

CRASH_NOTICE_SECONDS = 1.0  # how long a refused connection waits to learn whether the upstream died
REPLAY_NOTICE = "[%s] upstream died before answering; restarting it to replay the request"
_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})  # methods whose requests carry a body, even an empty one


class Call(NamedTuple):
    """A request bound for a model, as the lane accepted it."""

    model: str  # the model's id
    requested: str  # the name the client used (an id or an alias)
    target: bytes  # path and query for the upstream (after the `proxy` URL's own path)
    path: str  # the path alone, for labels and messages
    body: bytes  # as the model's filters rewrote it
    counted: bool  # counts toward the model's concurrency limit
    strip: frozenset[bytes]  # fields not sent on (those that carried llama-swap's own key)


async def forward(router: Router, client: UpstreamClient, call: Call, request: Incoming, conn: Connection,
                  tap: Tap) -> int:
    """Proxy ``call`` and relay the answer; the status to account for it (raises `HTTPError`
    or `RouteError` when no answer could begin)."""
    replayed = False
    while True:
        ticket = router.admit(call.model, counted=call.counted)
        lease = router.granted(ticket) or await router.wait(ticket)  # at once when ready (the common case)
        try:
            process = lease.process
            try:
                exchange = await send(client, process, call, request, conn)
            except NotSent as exc:
                if not replayed and await process.died(within=CRASH_NOTICE_SECONDS):
                    log.warning(REPLAY_NOTICE, call.model)
                    replayed = True
                    continue  # nothing reached the client yet: it never sees the crash
                raise unavailable(call, request, exc) from exc
            except (UpstreamClosed, TimeoutError) as exc:
                raise unavailable(call, request, exc) from exc
            try:
                status = answer_now(exchange, conn, tap, request)
                return status if status is not None else await relay(exchange, conn, tap, request, model=call.model)
            except BrokeOff as exc:
                raise HTTPError(502, str(exc)) from exc
            finally:
                exchange.close()
        finally:
            router.release(lease)


def send(client: UpstreamClient, process: ModelProcess, call: Call, request: Incoming, conn: Connection, *,
         interim: bool = True) -> Coroutine[None, None, Exchange]:
    """Send ``call`` to ``process``'s server; awaited, the answer once its head arrived
    (``interim`` answers are passed to an HTTP/1.1 client as they come)."""
    upstream = process.upstream
    method = request.method
    body = call.body
    head = request_head(method, upstream.prefix + call.target, request.raw_headers, upstream.host_header,
                        REQUEST_DROP | call.strip if call.strip else REQUEST_DROP, conn.peer,
                        len(body) if body or method in _WITH_BODY else None)
    return client.send(upstream, head + body if body else head, method == b"HEAD",
                       conn.interim_answer if interim and request.version == "1.1" else None)


def unavailable(call: Call, request: Incoming, exc: Exception) -> HTTPError:
    """The 502 for an upstream that gave no answer, saying why."""
    model = call.model
    if isinstance(exc, TimeoutError):
        message = f"upstream '{model}' did not answer in time (timeouts.responseHeader)"
    elif isinstance(exc, UpstreamClosed):
        message = (f"upstream '{model}' closed the connection without answering: {exc}; "
                   "it had the request, so it is not sent again")
    else:
        message = f"upstream '{model}' did not answer: {exc}"
    log.warning("[%s] 502 for %s %s: %s", model, request.method.decode("latin-1"), call.path, message)
    return HTTPError(502, message)
