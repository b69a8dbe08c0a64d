"""What a capture keeps (`observe/captures.py`): driven with `Tracked` as the relay drives it."""

from __future__ import annotations

import base64
import gzip

import pytest

from llama_swap.observe.activity import Activity, Tracked
from llama_swap.observe.captures import COLLECT_FACTOR, MB, Captures
from llama_swap.observe.events import EventBus
from llama_swap.observe.metrics import Metrics
from llama_swap.observe.store import ActivityStore
from llama_swap.redact import use_secrets
from llama_swap.wire.incoming import Incoming

BODY = b'{"model":"m","messages":[]}'


def request(*fields: tuple[bytes, bytes]) -> Incoming:
    incoming = Incoming()
    incoming.raw_headers.extend([(b"Host", b"h"), *fields])
    incoming.body = [BODY]
    incoming.size = len(BODY)
    return incoming


def with_buffer(buffer_mb: int) -> Activity:
    return Activity(EventBus(), Metrics(["m"]), ActivityStore(None, 100), [], Captures(buffer_mb))


def served(activity: Activity, incoming: Incoming, headers: list[tuple[bytes, bytes]], *chunks: bytes) -> int:
    """One inference POST through `Activity`, its answer relayed chunk by chunk; its row id."""
    captures = activity.captures
    tracked: Tracked = activity.begin("m", "POST", "/v1/chat/completions", incoming.headers, None,
                                      label="/v1/chat/completions", metered=True)
    captures.watch(tracked, incoming)
    tracked.respond(200, "application/json", "", headers)
    for data in chunks:
        tracked.chunk(data)
    activity.finish(tracked, 200)
    return activity.store.last_id


async def test_request_and_answer_round_trip_compressed_or_not() -> None:
    activity = with_buffer(1)
    captures = activity.captures
    small = served(activity, request(), [(b"Content-Type", b"application/json")], b'{"a":', b"1}")
    large_answer = b"data: " + b"x" * 10_000 + b"\n\n"
    large = served(activity, request(), [(b"Content-Type", b"text/event-stream")], large_answer, b"data: [DONE]\n\n")
    assert captures.has(small) and captures.has(large)  # before being settled too
    first = captures.get(small)
    assert first is not None
    assert base64.b64decode(first["req_body"]) == BODY and base64.b64decode(first["resp_body"]) == b'{"a":1}'
    assert first["req_headers"] == {"Host": "h"} and first["resp_headers"] == {"Content-Type": "application/json"}
    second = captures.get(large)
    assert second is not None and base64.b64decode(second["resp_body"]) == large_answer + b"data: [DONE]\n\n"


async def test_a_gzip_answer_is_kept_decoded() -> None:
    activity = with_buffer(1)
    captures = activity.captures
    fields = [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked")]
    row = served(activity, request(), fields, gzip.compress(b'{"ok":true}'))
    capture = captures.get(row)
    assert capture is not None and base64.b64decode(capture["resp_body"]) == b'{"ok":true}'
    assert capture["resp_headers"] == {"Content-Type": "application/json"}  # no coding, nor hop-by-hop


async def test_a_configured_key_is_redacted_in_any_header() -> None:
    use_secrets(["sk-configured-key"])
    try:
        activity = with_buffer(1)
        captures = activity.captures
        fields = (b"X-Custom", b"token sk-configured-key"), (b"API-Key", b"other"), (b"X-Plain", b"shown")
        capture = captures.get(served(activity, request(*fields), []))
    finally:
        use_secrets([])
    assert capture is not None
    assert capture["req_headers"] == {"Host": "h", "X-Custom": "[REDACTED]", "API-Key": "[REDACTED]", "X-Plain": "shown"}


async def test_an_answer_past_the_collection_limit_is_dropped_as_it_passes() -> None:
    activity = with_buffer(1)
    captures = activity.captures
    chunk = b"z" * (COLLECT_FACTOR * MB // 2)
    row = served(activity, request(), [], chunk, chunk, chunk)
    assert not captures.has(row) and captures.get(row) is None


async def test_nothing_is_recorded_when_off() -> None:
    activity = with_buffer(0)
    captures = activity.captures
    row = served(activity, request(), [], b"{}")
    assert not captures.enabled and captures.get(row) is None


@pytest.mark.parametrize("buffer_mb", [1, 0])
async def test_a_reload_resizes_the_buffer(buffer_mb: int) -> None:
    activity = with_buffer(5)
    captures = activity.captures
    row = served(activity, request(), [], b"{}")
    captures.get(row)
    captures.resize(buffer_mb)
    assert captures.has(row) is bool(buffer_mb)
