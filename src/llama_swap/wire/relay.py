"""The one relay: an upstream's answer to the client, unbuffered, through the request's tap.

Every answer from a model's server reaches its client here, whichever way the request came
(an inference path, `/upstream/…`, the continuation of a loading stream). A small answer of
known length is read whole and written with its head in one write; anything else goes on
chunk by chunk as it arrives, with backpressure both ways. Each chunk goes to the tap before
the client (the upstream did the work even if the client is gone).

An answer that cannot be completed is ended so that the client cannot take it for whole: an
SSE stream gets a final error event (the `openai` client raises it), other bodies are cut.
A client that leaves after the last byte was written has had a whole answer: it counts as
delivered, not as a client gone away.

A client speaking another API (Ollama's) gets the upstream's 2xx answer through a
`Translation`: a JSON answer rewritten whole, an SSE stream event by event as it arrives —
still unbuffered, with the tap seeing the upstream's own bytes (its usage and timings).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson

from llama_swap.errors import stream_error
from llama_swap.wire.framing import END_CHUNKS, chunk, head, json_answer
from llama_swap.wire.headers import RawFields
from llama_swap.wire.incoming import Incoming
from llama_swap.wire.upstream import Exchange, UpstreamClosed

log = logging.getLogger("llama_swap.proxy")

WHOLE_BODY = 64 * 1024  # answers up to this size, with a Content-Length, are sent in one write
BODILESS = frozenset({204, 304})  # their fields must pass as they are
SSE = "text/event-stream"
# The last event of an OpenAI (chat, completions), Anthropic (messages) or Responses stream:
# a client may close as soon as it has it — the answer was whole.
_STREAM_ENDS = (b"data: [DONE]", b"event: message_stop", b"event: response.completed")
_NO_BUFFERING = (b"X-Accel-Buffering", b"no")  # tells nginx & co. not to buffer a stream


class Tap(Protocol):
    """What the relay reports an answer to (the request's accounting) as it passes."""

    cancelled: bool  # set when an operator cancels the request; its task is then cancelled
    error: str | None  # why it failed, if it did (an operator's cancel sets it)

    def respond(self, status: int, content_type: str, content_encoding: str, headers: RawFields) -> None:
        """The answer's status, its `Content-Type` and `Content-Encoding` as sent, and its fields."""

    def chunk(self, data: bytes) -> None: ...


class Client(Protocol):
    """The client's side of the connection, as the relay writes to it."""

    paused: bool  # its socket buffer is full: `drain` before writing more

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class Translation(Protocol):
    """An upstream's 2xx answer rewritten for a client that speaks another API (`dialects/`)."""

    content_type: bytes  # of a translated stream

    def granted(self) -> None:
        """The model is ready for the request: its load or queueing is over."""

    def whole(self, body: bytes) -> bytes:
        """A whole JSON answer, translated (raises `Untranslatable`)."""

    def feed(self, data: bytes) -> bytes:
        """What to write for this piece of an SSE stream (maybe nothing yet)."""

    def end(self) -> bytes:
        """What to write after the stream's last piece."""

    def failed(self, message: str, status: int) -> bytes:
        """The last words of a stream cut short."""


class BrokeOff(Exception):
    """The upstream's answer ended early, before anything of it reached the client."""


class Untranslatable(Exception):
    """An upstream's 2xx answer that is not what its `Translation` reads (a 502)."""


def broke_off_message(model: str) -> str:
    return f"upstream '{model}' stopped in the middle of the response"


def sse_error(message: str, code: int) -> bytes:
    """An SSE event carrying an error, which the `openai` client raises as `APIError`."""
    return b"data: " + orjson.dumps(stream_error(message, code)) + b"\n\n"


def answer_now(exchange: Exchange, client: Client, tap: Tap, request: Incoming,
               translation: Translation | None = None) -> int | None:
    """The answer written at once, when there is nothing of it still to come — no body, or a
    small one already here (most JSON answers arrive with their head): its status. None,
    having written nothing, for the rest (`relay`); spares the common answer a coroutine."""
    status = exchange.status
    bodiless = exchange.bodiless or status in BODILESS  # fields as they are, no body
    if not bodiless and not (exchange.complete and exchange.content_type != SSE
                             and (exchange.content_length or 0) <= WHOLE_BODY):
        return None
    tap.respond(status, exchange.raw_content_type, exchange.content_encoding, exchange.raw_headers)
    if translation is not None and _translated(exchange, bodiless):
        whole = exchange.take()
        tap.chunk(whole)
        client.write(json_answer(status, translation.whole(whole), connection=request.connection))
        return status
    answer = head(status, exchange.reason, exchange.raw_headers, drop=exchange.drop, connection=request.connection)
    if not bodiless:
        whole = exchange.take()
        tap.chunk(whole)
        answer += whole
    client.write(answer)
    return status


async def relay(exchange: Exchange, client: Client, tap: Tap, request: Incoming, *, model: str,
                translation: Translation | None = None) -> int:
    """Write ``exchange``'s answer to ``request``'s ``client``; the status to account for it
    once its last byte is written (502 or 503 when it was ended early, with ``tap.error``
    saying why). An HTTP/1.0 client cannot read chunks: a stream of unknown length reaches
    it unframed, and the connection's end ends it.

    Raises `BrokeOff` when a small answer broke off before anything was sent (the caller
    answers instead), `asyncio.CancelledError` when the client left before the end.
    """
    status = answer_now(exchange, client, tap, request, translation)
    if status is not None:
        return status
    status = exchange.status
    tap.respond(status, exchange.raw_content_type, exchange.content_encoding, exchange.raw_headers)
    if translation is not None and _translated(exchange, False):
        return await _relay_translated(exchange, client, tap, request, translation, model)
    length = exchange.content_length
    sse = exchange.content_type == SSE
    if length is not None and length <= WHOLE_BODY and not sse:
        try:
            whole = await exchange.read()
        except UpstreamClosed as exc:
            raise BrokeOff(f"{broke_off_message(model)}: {exc}") from exc
        tap.chunk(whole)
        client.write(head(status, exchange.reason, exchange.raw_headers, drop=exchange.drop,
                          connection=request.connection) + whole)
        return status
    chunked = length is None and request.version == "1.1"
    if length is None and not chunked:
        request.end_connection()
    fields = [*exchange.raw_headers, _NO_BUFFERING] if sse else exchange.raw_headers
    client.write(head(status, exchange.reason, fields, drop=exchange.drop, chunked=chunked,
                      connection=request.connection))
    return await pump(exchange, client, tap, chunked=chunked, sse=sse, model=model)


def _translated(exchange: Exchange, bodiless: bool) -> bool:
    """Whether an answer goes through its translation: a 2xx with a body (errors pass as
    they are); one the translation cannot read is `Untranslatable`."""
    if bodiless or not 200 <= exchange.status < 300:
        return False
    if exchange.content_encoding != "identity":
        raise Untranslatable(f"the upstream's answer is {exchange.content_encoding}-encoded")
    return True


async def _relay_translated(exchange: Exchange, client: Client, tap: Tap, request: Incoming,
                            translation: Translation, model: str) -> int:
    """A translated answer not already here: a JSON one read whole, a stream relayed as it comes."""
    status = exchange.status
    if exchange.content_type != SSE:
        try:
            whole = await exchange.read()
        except UpstreamClosed as exc:
            raise BrokeOff(f"{broke_off_message(model)}: {exc}") from exc
        tap.chunk(whole)
        client.write(json_answer(status, translation.whole(whole), connection=request.connection))
        return status
    chunked = request.version == "1.1"
    if not chunked:
        request.end_connection()
    client.write(head(status, "", [(b"Content-Type", translation.content_type), _NO_BUFFERING], chunked=chunked,
                      connection=request.connection))
    return await pump(exchange, client, tap, chunked=chunked, sse=True, model=model, translation=translation)


async def pump(exchange: Exchange, client: Client, tap: Tap, *, chunked: bool, sse: bool, model: str,
               translation: Translation | None = None) -> int:
    """The body of an answer whose head the client has (also the upstream's events inside a
    loading stream, `sse` and `chunked`), chunk by chunk as it arrives — or what its
    ``translation`` makes of each chunk."""
    data = b""
    try:
        async for data in exchange:
            tap.chunk(data)
            out = data if translation is None else translation.feed(data)
            if out:
                client.write(chunk(out) if chunked else out)
            if client.paused:
                await client.drain()
    except UpstreamClosed as exc:
        log.warning("[%s] upstream broke off its response: %s", model, exc)
        tap.error = broke_off_message(model)
        _break_off(client, sse, chunked, tap.error, 502, translation)
        return 502
    except asyncio.CancelledError:
        if tap.cancelled:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            _break_off(client, sse, chunked, tap.error or "cancelled", 503, translation)
            return 503
        if not (exchange.finished or sse and _ends_stream(data)):
            raise  # the client went away before the end
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # ... after it: delivered
        return exchange.status
    tail = translation.end() if translation is not None else b""
    if tail:
        client.write(chunk(tail) if chunked else tail)
    if chunked:
        client.write(END_CHUNKS)
    return exchange.status


def _ends_stream(data: bytes) -> bool:
    """Whether the last chunk written carried a stream's last event (`_STREAM_ENDS`)."""
    tail = data[-64:]
    return any(marker in tail for marker in _STREAM_ENDS)


def _break_off(client: Client, sse: bool, chunked: bool, message: str, code: int,
               translation: Translation | None = None) -> None:
    if translation is not None:
        last = translation.failed(message, code)
        client.write(chunk(last) + END_CHUNKS if chunked else last)
        if not chunked:
            client.close()
    elif sse and chunked:
        client.write(chunk(sse_error(message, code)) + END_CHUNKS)
    else:
        client.close()
