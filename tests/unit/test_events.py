"""`/api/events`: the Go framing, fan-out, slow readers that resync, unsubscribe and close."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llama_swap.observe.events import ACTIVITY, INFLIGHT, MODEL_STATUS, RESYNC, EventBus, frame
from llama_swap.observe.logbuffer import Subscription, drop_notice

WAIT = 5  # seconds; only reached when a test is failing


def decode(chunk: bytes) -> tuple[str, Any]:
    """An SSE frame back into (type, data), checking the framing on the way."""
    text = chunk.decode()
    assert text.startswith("event: message\ndata: ") and text.endswith("\n\n")
    envelope = json.loads(text[len("event: message\ndata: "):-2])
    assert list(envelope) == ["type", "data"]
    assert isinstance(envelope["data"], str)  # a JSON document inside a JSON string
    return envelope["type"], json.loads(envelope["data"])


def drain(sub: Subscription) -> list[bytes]:
    chunks = []
    while (chunk := sub.get_nowait()) is not None:
        chunks.append(chunk)
    return chunks


async def next_chunk(sub: Subscription) -> bytes | None:
    """`get()`, bounded so that a reader left waiting fails the test instead of hanging it."""
    return await asyncio.wait_for(sub.get(), WAIT)


def numbered(count: int, start: int = 0) -> list[bytes]:
    return [frame(INFLIGHT, {"n": n}) for n in range(start, start + count)]


def publish_numbered(bus: EventBus, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        bus.publish(INFLIGHT, {"n": n})


# ---------------------------------------------------------------- framing


def test_frame_is_the_go_framing_byte_for_byte() -> None:
    assert frame(MODEL_STATUS, {"a": 1}) == b'event: message\ndata: {"type":"modelStatus","data":"{\\"a\\":1}"}\n\n'
    assert frame(ACTIVITY, None) == b'event: message\ndata: {"type":"activity","data":"null"}\n\n'


@pytest.mark.parametrize(
    "data",
    [
        [{"id": "llama/3:8b", "state": "ready", "aliases": ["a", "b"], "pid": None}],
        {"source": "proxy", "data": 'line "one"\nline\ttwo ✓\n\\end'},
        "a plain string",
        0,
        {"nested": {"deep": [1, 2.5, True, None]}},
    ],
    ids=["list", "escapes", "string", "zero", "nested"],
)
def test_frame_data_decodes_with_two_json_loads(data: Any) -> None:
    chunk = frame("someType", data)
    assert chunk.count(b"\n") == 3  # newlines inside the data are escaped, twice
    assert decode(chunk) == ("someType", data)


# ---------------------------------------------------------------- publishing


async def test_inactive_without_readers_and_publish_is_a_no_op() -> None:
    bus = EventBus()
    assert bus.active is False
    bus.publish(INFLIGHT, {"lost": True})
    sub = bus.subscribe()
    assert bus.active is True
    assert sub.get_nowait() is None  # what was published before is not replayed
    bus.publish(INFLIGHT, {"seen": True})
    assert [decode(chunk) for chunk in drain(sub)] == [(INFLIGHT, {"seen": True})]


async def test_publish_does_not_encode_without_readers() -> None:
    EventBus().publish(INFLIGHT, object())  # not JSON: fine, since nothing is encoded
    bus = EventBus()
    bus.subscribe()
    with pytest.raises(TypeError):
        bus.publish(INFLIGHT, object())


async def test_fan_out_to_every_subscriber_in_order() -> None:
    bus = EventBus()
    subs = [bus.subscribe() for _ in range(3)]
    publish_numbered(bus, 5)
    for sub in subs:
        assert drain(sub) == numbered(5)


async def test_reader_waiting_in_get_is_woken_by_publish() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    asyncio.get_running_loop().call_soon(bus.publish, ACTIVITY, {"id": 1})
    chunk = await next_chunk(sub)
    assert decode(chunk) == (ACTIVITY, {"id": 1})


async def test_publish_from_another_thread_reaches_a_waiting_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    reader = asyncio.ensure_future(sub.get())
    await asyncio.to_thread(bus.publish, "logData", {"source": "upstream", "data": "x"})
    assert decode(await asyncio.wait_for(reader, WAIT)) == ("logData", {"source": "upstream", "data": "x"})


# ---------------------------------------------------------------- slow readers


async def test_slow_reader_never_blocks_publish_and_resyncs_after_draining() -> None:
    bus = EventBus(queue_events=4)
    slow, fast = bus.subscribe(), bus.subscribe()
    fast_seen = []
    for n in range(10):
        bus.publish(INFLIGHT, {"n": n})  # returns at once though `slow` never reads
        fast_seen += drain(fast)
    assert fast_seen == numbered(10)

    assert [slow.get_nowait() for _ in range(4)] == numbered(4)
    assert slow.get_nowait() == RESYNC  # one marker in place of the six it missed
    assert slow.get_nowait() is None
    publish_numbered(bus, 2, start=10)
    assert drain(slow) == numbered(2, start=10)
    assert drain(fast) == numbered(2, start=10)


async def test_resync_comes_before_newer_events_when_space_frees_up() -> None:
    bus = EventBus(queue_events=4)
    sub = bus.subscribe()
    publish_numbered(bus, 6)  # 4 queued, 2 missed
    assert sub.get_nowait() == numbered(1)[0]
    publish_numbered(bus, 1, start=6)
    assert drain(sub) == [*numbered(3, start=1), RESYNC, *numbered(1, start=6)]


async def test_resync_is_handed_to_an_awaiting_reader() -> None:
    bus = EventBus(queue_events=1)
    sub = bus.subscribe()
    publish_numbered(bus, 3)
    assert await next_chunk(sub) == numbered(1)[0]
    assert await next_chunk(sub) == RESYNC
    asyncio.get_running_loop().call_soon(publish_numbered, bus, 1, 3)
    assert await next_chunk(sub) == numbered(1, start=3)[0]


def test_resync_is_empty_bytes_and_no_frame_is() -> None:
    assert RESYNC == b""
    assert frame(INFLIGHT, {}) != RESYNC


async def test_subscription_notice_replaces_the_default_drop_notice() -> None:
    bus = EventBus()
    custom = Subscription(bus, 1, notice=lambda missed: f"missed {missed}".encode())
    default = Subscription(bus, 1)
    for sub in (custom, default):
        sub.put(b"aa")
        sub.put(b"bbb")
        sub.put(b"cccc")
    assert drain(custom) == [b"aa", b"missed 7"]
    assert drain(default) == [b"aa", drop_notice(7)]


# ---------------------------------------------------------------- unsubscribe and close


async def test_unsubscribe_stops_delivery_to_that_reader_only() -> None:
    bus = EventBus()
    gone, stays = bus.subscribe(), bus.subscribe()
    gone.unsubscribe()
    publish_numbered(bus, 2)
    assert drain(gone) == []
    assert await next_chunk(gone) is None  # its stream has ended
    assert drain(stays) == numbered(2)
    bus.unsubscribe(stays)
    assert bus.active is False
    publish_numbered(bus, 1)
    assert drain(stays) == []


async def test_unsubscribing_twice_or_a_stranger_is_harmless() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    other = EventBus().subscribe()
    bus.unsubscribe(other)
    sub.unsubscribe()
    sub.unsubscribe()
    assert bus.active is False


async def test_close_ends_readers_after_what_they_have_queued() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    publish_numbered(bus, 1)
    bus.close()
    assert bus.active is False
    publish_numbered(bus, 1, start=1)  # nobody listens any more
    assert [await next_chunk(first), await next_chunk(first)] == [numbered(1)[0], None]
    assert [await next_chunk(second), await next_chunk(second)] == [numbered(1)[0], None]


async def test_close_wakes_a_waiting_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    asyncio.get_running_loop().call_soon(bus.close)
    assert await next_chunk(sub) is None
    assert sub.closed is True


async def test_subscribing_after_close_works() -> None:
    bus = EventBus()
    bus.subscribe()
    bus.close()
    sub = bus.subscribe()
    publish_numbered(bus, 1)
    assert drain(sub) == numbered(1)
