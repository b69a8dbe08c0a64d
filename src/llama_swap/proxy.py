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
from llama_swap.routing.names import Destination, PeerModel
from llama_swap.routing.router import Router
from llama_swap.wire.front import Connection
from llama_swap.wire.headers import REQUEST_DROP, request_head
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.relay import BrokeOff, Tap, Translation, Untranslatable, answer_now, relay
from llama_swap.wire.upstream import Exchange, NotSent, Upstream, UpstreamClient, UpstreamClosed

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
    destination: Destination | None = None  # how a profile pin, a selector or a peer resolved it; None: plainly local
    keep_alive: float | None = None  # seconds its model stays loaded once idle, for this run (Ollama's keep_alive)


async def forward(router: Router, client: UpstreamClient, call: Call, request: Incoming, conn: Connection,
                  tap: Tap, translation: Translation | None = None) -> int:
    """Proxy ``call`` and relay the answer (through ``translation`` for a client of another
    API); the status to account for it (raises `HTTPError` or `RouteError` when no answer
    could begin)."""
    replayed = False
    while True:
        ticket = router.admit(call.model, counted=call.counted)
        lease = router.granted(ticket) or await router.wait(ticket)  # at once when ready (the common case)
        try:
            process = lease.process
            if call.keep_alive is not None:
                router.keep_alive(lease, call.keep_alive)
            if translation is not None:
                translation.granted()
            try:
                exchange = await send(client, process.upstream, call, request, conn)
            except NotSent as exc:
                if not replayed and await process.died(within=CRASH_NOTICE_SECONDS):
                    log.warning(REPLAY_NOTICE, call.model)
                    replayed = True
                    continue  # nothing reached the client yet: it never sees the crash
                raise unavailable(call, request, exc) from exc
            except (UpstreamClosed, TimeoutError) as exc:
                raise unavailable(call, request, exc) from exc
            return await deliver(exchange, conn, tap, request, call.model, translation)
        finally:
            router.release(lease)


async def deliver(exchange: Exchange, conn: Connection, tap: Tap, request: Incoming, model: str,
                  translation: Translation | None = None) -> int:
    """Relay the answer whose head arrived (a small one written at once), then close the
    exchange; the status to account for it (a 502 when the upstream broke off first, or
    answered what ``translation`` cannot read)."""
    try:
        status = answer_now(exchange, conn, tap, request, translation)
        if status is None:
            status = await relay(exchange, conn, tap, request, model=model, translation=translation)
        return status
    except BrokeOff as exc:
        raise HTTPError(502, str(exc)) from exc
    except Untranslatable as exc:
        raise HTTPError(502, f"upstream '{model}' answered what cannot be translated: {exc}") from exc
    finally:
        exchange.close()


def send(client: UpstreamClient, upstream: Upstream, call: Call, request: Incoming, conn: Connection, *,
         interim: bool = True, extra: bytes = b"") -> Coroutine[None, None, Exchange]:
    """Send ``call`` to ``upstream``; awaited, the answer once its head arrived (``interim``
    answers are passed to an HTTP/1.1 client as they come; ``extra``: field lines to add)."""
    method = request.method
    body = call.body
    head = request_head(method, upstream.prefix + call.target, request.raw_headers, upstream.host_header,
                        REQUEST_DROP | call.strip if call.strip else REQUEST_DROP, conn.peer,
                        len(body) if body or method in _WITH_BODY else None, extra)
    return client.send(upstream, head + body if body else head, method == b"HEAD",
                       conn.interim_answer if interim and request.version == "1.1" else None)


async def forward_to_peer(client: UpstreamClient, peer: PeerModel, call: Call, request: Incoming, conn: Connection,
                          tap: Tap, translation: Translation | None = None) -> int:
    """Proxy ``call`` to a peer and relay the answer, with the peer's key. A peer never
    swaps and is never sent a request twice; one that does not answer is a 502 naming it."""
    route = peer.route
    if translation is not None:
        translation.granted()  # a peer loads its models itself: its time counts as the answer's
    call = call._replace(strip=call.strip | route.replaced) if route.replaced else call
    try:
        exchange = await send(client, route.upstream, call, request, conn, extra=route.key_fields)
    except (OSError, TimeoutError) as exc:  # NotSent and UpstreamClosed are OSErrors
        message = f"peer proxy error: peer '{peer.peer_id}' ({route.url}) did not answer: {_reason(exc)}"
        log.warning("[%s] 502 for %s %s: %s", call.model, request.method.decode("latin-1"), call.path, message)
        raise HTTPError(502, message) from exc
    return await deliver(exchange, conn, tap, request, call.model, translation)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time (timeouts.responseHeader)"
    return str(exc) or type(exc).__name__


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
