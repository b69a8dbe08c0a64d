"""Per-request accounting: in-flight list, metering, activity rows, events, metrics, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from llama_swap.observe.activity import CANCELLED, ERROR_MESSAGE, Activity, Tracked
from llama_swap.observe.captures import Captures
from llama_swap.observe.events import ACTIVITY, INFLIGHT, EventBus
from llama_swap.observe.logbuffer import Subscription
from llama_swap.observe.metrics import Metrics
from llama_swap.observe.store import ActivityQuery, ActivityRow, ActivityStore

CHAT = "/v1/chat/completions"
SESSION_HEADERS = ["X-Session-Id", "X-Chat-Id"]
SSE = {"Content-Type": "text/event-stream"}
JSON = {"Content-Type": "application/json"}

LLAMA_STREAM = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,'
    b'"prompt_tokens_details":{"cached_tokens":2}},"timings":{"prompt_n":12,"predicted_n":6,"cache_n":3,'
    b'"prompt_per_second":120.5,"predicted_per_second":30.25,"draft_n":8,"draft_n_accepted":5}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_STREAM = (
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,'
    b'"prompt_tokens_details":{"cached_tokens":2}}}\n\n'
    b"data: [DONE]\n\n"
)
VLLM_BODY = (
    b'{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":50,"completion_tokens":10,'
    b'"prompt_tokens_details":{"cached_tokens":10}},"metrics":{"time_to_first_token_ms":100,"mean_itl_ms":20,'
    b'"speculative_decoding":{"num_draft_tokens":40,"num_accepted_draft_tokens":30}}}'
)
WAIT = 5  # seconds; only reached when a test is failing
NO_USAGE = dict.fromkeys(
    ("prompt_tokens", "generated_tokens", "cached_tokens", "draft_tokens", "accepted_tokens",
     "prompt_per_second", "generation_per_second")
)


@dataclass
class Rig:
    bus: EventBus
    metrics: Metrics
    store: ActivityStore
    activity: Activity

    def begin(
        self, headers: dict[str, str] | None = None, remote: str | None = "127.0.0.1", *,
        model: str = "m", path: str = CHAT, metered: bool = True,
    ) -> Tracked:
        return self.activity.begin(
            model, "POST", path, CIMultiDict(headers or {}), remote, label=path, metered=metered
        )

    def rows(self) -> list[ActivityRow]:
        return self.store.query(ActivityQuery(limit=999)).rows

    def only_row(self) -> ActivityRow:
        [row] = self.rows()
        return row

    def sample(self, name: str, **labels: str) -> float:
        """A series' value; one not created yet reads 0, as Prometheus treats it."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def rig() -> Rig:
    bus = EventBus()
    metrics = Metrics(["m", "other"])
    store = ActivityStore(None, 100)
    return Rig(bus, metrics, store, Activity(bus, metrics, store, SESSION_HEADERS, Captures(0)))


def answer(tracked: Tracked, status: int, headers: dict[str, str], body: bytes, piece: int = 7) -> None:
    """Relay ``body`` in small pieces, so lines and JSON documents are split across chunks."""
    tracked.respond(status, headers.get("Content-Type", ""), headers.get("Content-Encoding", "identity"), [])
    for start in range(0, len(body), piece):
        tracked.chunk(body[start:start + piece])


def events(sub: Subscription) -> list[tuple[str, Any]]:
    """Everything queued for ``sub``, decoded from the Go framing (JSON inside a JSON string)."""
    decoded = []
    while (chunk := sub.get_nowait()) is not None:
        envelope = json.loads(chunk.decode().removeprefix("event: message\ndata: "))
        decoded.append((envelope["type"], json.loads(envelope["data"])))
    return decoded


def usage_of(row: ActivityRow) -> dict[str, Any]:
    return {key: getattr(row, key) for key in NO_USAGE}


# ---------------------------------------------------------------- in flight


async def test_begin_lists_the_request_in_flight(rig: Rig) -> None:
    before = time.time()
    tracked = rig.begin({"X-Session-Id": "s-1"}, "10.1.2.3", model="other", path="/v1/completions")
    after = time.time()
    [listed] = rig.activity.inflight()
    started = listed.pop("started")
    assert int(before * 1000) <= started <= int(after * 1000)
    assert listed == {
        "id": tracked.id, "model": "other", "method": "POST", "path": "/v1/completions", "bytes": 0,
        "client": "10.1.2.3", "session_id": "s-1",
    }
    assert tracked.task is asyncio.current_task()


async def test_request_ids_count_up(rig: Rig) -> None:
    assert [rig.begin().id for _ in range(3)] == [1, 2, 3]
    assert [entry["id"] for entry in rig.activity.inflight()] == [1, 2, 3]


@pytest.mark.parametrize(
    ("headers", "remote", "client"),
    [
        ({"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Real-IP": "10.0.0.2"}, "127.0.0.1", "203.0.113.7"),
        ({"x-forwarded-for": " 203.0.113.8 "}, "127.0.0.1", "203.0.113.8"),
        ({"X-Real-IP": " 10.0.0.2 "}, "127.0.0.1", "10.0.0.2"),
        ({"X-Forwarded-For": "", "X-Real-IP": "10.0.0.2"}, "127.0.0.1", "10.0.0.2"),
        ({"X-Forwarded-For": " , 10.0.0.1"}, "127.0.0.1", "127.0.0.1"),
        ({}, "127.0.0.1", "127.0.0.1"),
        ({}, None, ""),
    ],
)
async def test_client_address(rig: Rig, headers: dict[str, str], remote: str | None, client: str) -> None:
    assert rig.begin(headers, remote).client == client


@pytest.mark.parametrize(
    ("headers", "session_id"),
    [
        ({"X-Session-Id": "first", "X-Chat-Id": "second"}, "first"),
        ({"X-Chat-Id": "second"}, "second"),
        ({"x-session-id": " trimmed "}, "trimmed"),
        ({"X-Session-Id": "   ", "X-Chat-Id": "second"}, "second"),
        ({"X-Other": "x"}, None),
        ({}, None),
    ],
)
async def test_session_id_from_the_first_configured_header(
    rig: Rig, headers: dict[str, str], session_id: str | None
) -> None:
    assert rig.begin(headers).session_id == session_id


async def test_no_session_headers_configured(rig: Rig) -> None:
    activity = Activity(rig.bus, rig.metrics, rig.store, [], Captures(0))
    assert activity.begin("m", "GET", "/", CIMultiDict({"X-Session-Id": "s"}), None, label="other",
                          metered=False).session_id is None


async def test_inflight_gauge_follows_begin_and_finish(rig: Rig) -> None:
    first, second, third = rig.begin(), rig.begin(), rig.begin(model="other")
    assert rig.sample("llamaswap_inflight_requests", model="m") == 2
    assert rig.sample("llamaswap_inflight_requests", model="other") == 1
    rig.activity.finish(first, 200)
    assert rig.sample("llamaswap_inflight_requests", model="m") == 1
    assert [entry["id"] for entry in rig.activity.inflight()] == [second.id, third.id]
    rig.activity.finish(second, 200)
    rig.activity.finish(third, 200)
    assert rig.sample("llamaswap_inflight_requests", model="m") == 0
    assert rig.sample("llamaswap_inflight_requests", model="other") == 0
    assert rig.activity.inflight() == []


# ---------------------------------------------------------------- answers and metering


async def test_chunks_are_counted(rig: Rig) -> None:
    tracked = rig.begin()
    answer(tracked, 200, SSE, LLAMA_STREAM)
    assert tracked.bytes == len(LLAMA_STREAM)
    assert tracked.first_byte is not None and tracked.first_byte >= tracked.t0
    assert tracked.content_type == "text/event-stream"
    assert rig.activity.inflight()[0]["bytes"] == len(LLAMA_STREAM)


async def test_first_byte_is_the_first_chunk(rig: Rig) -> None:
    tracked = rig.begin()
    tracked.respond(200, SSE["Content-Type"], "identity", [])
    assert tracked.first_byte is None  # headers are not the body
    tracked.chunk(b"data: {}\n\n")
    first = tracked.first_byte
    tracked.chunk(b"data: {}\n\n")
    assert tracked.first_byte == first


@pytest.mark.parametrize(
    ("headers", "body", "usage"),
    [
        (SSE, LLAMA_STREAM, {  # llama.cpp's timings override the counts and give rates and drafts
            "prompt_tokens": 12, "generated_tokens": 6, "cached_tokens": 3, "draft_tokens": 8,
            "accepted_tokens": 5, "prompt_per_second": 120.5, "generation_per_second": 30.25,
        }),
        ({"Content-Type": "text/event-stream; charset=utf-8"}, OPENAI_STREAM,
         {**NO_USAGE, "prompt_tokens": 10, "generated_tokens": 5, "cached_tokens": 2}),
        (JSON, VLLM_BODY, {  # vLLM: rates from its latencies, drafts from speculative decoding
            "prompt_tokens": 50, "generated_tokens": 10, "cached_tokens": 10, "draft_tokens": 40,
            "accepted_tokens": 30, "prompt_per_second": 400.0, "generation_per_second": 50.0,
        }),
        ({**SSE, "Content-Encoding": "gzip"}, LLAMA_STREAM, NO_USAGE),  # compressed: not read
        ({"Content-Type": "text/plain"}, LLAMA_STREAM, NO_USAGE),
        (SSE, b'data: {"choices":[]}\n\ndata: [DONE]\n\n', NO_USAGE),
    ],
    ids=["llama.cpp-sse", "openai-sse", "vllm-json", "gzip", "text", "no-usage"],
)
async def test_metered_answer_becomes_a_row(
    rig: Rig, headers: dict[str, str], body: bytes, usage: dict[str, Any]
) -> None:
    tracked = rig.begin()
    answer(tracked, 200, headers, body)
    rig.activity.finish(tracked, 200)
    row = rig.only_row()
    assert usage_of(row) == usage
    assert (row.id, row.timestamp, row.model, row.method, row.req_path) == (1, tracked.started, "m", "POST", CHAT)
    assert (row.resp_status_code, row.resp_content_type, row.error_msg) == (200, headers["Content-Type"], None)
    assert row.ttfb_ms is not None and 0 <= row.ttfb_ms <= row.duration_ms
    for kind, key in (("prompt", "prompt_tokens"), ("generated", "generated_tokens"), ("cached", "cached_tokens")):
        assert rig.sample("llamaswap_tokens_total", model="m", kind=kind) == (usage[key] or 0)
    for name, key in (("llamaswap_prompt_tokens_per_second", "prompt_per_second"),
                      ("llamaswap_generation_tokens_per_second", "generation_per_second")):
        assert rig.sample(f"{name}_count", model="m") == (0 if usage[key] is None else 1)
        assert rig.sample(f"{name}_sum", model="m") == (usage[key] or 0)


async def test_request_without_body_has_no_first_byte(rig: Rig) -> None:
    tracked = rig.begin()
    tracked.respond(204, "", "identity", [])
    rig.activity.finish(tracked, 204)
    row = rig.only_row()
    assert row.ttfb_ms is None and row.duration_ms >= 0
    assert usage_of(row) == NO_USAGE
    assert rig.sample("llamaswap_time_to_first_byte_seconds_count", model="m") == 0
    assert rig.sample("llamaswap_request_duration_seconds_count", model="m") == 1


async def test_finish_records_request_metrics(rig: Rig) -> None:
    for status in (200, 200, 500):
        tracked = rig.begin()
        answer(tracked, status, SSE, LLAMA_STREAM)
        rig.activity.finish(tracked, status)
    assert rig.sample("llamaswap_requests_total", model="m", path=CHAT, status="200") == 2
    assert rig.sample("llamaswap_requests_total", model="m", path=CHAT, status="500") == 1
    assert rig.sample("llamaswap_time_to_first_byte_seconds_count", model="m") == 3
    assert rig.sample("llamaswap_request_duration_seconds_count", model="m") == 3
    assert rig.sample("llamaswap_tokens_total", model="m", kind="prompt") == 24  # the 500 is not metered
    assert rig.sample("llamaswap_inflight_requests", model="m") == 0
    assert [row.id for row in rig.rows()] == [3, 2, 1]


async def test_unmetered_request_counts_but_leaves_no_row(rig: Rig) -> None:
    sub = rig.bus.subscribe()
    tracked = rig.begin(metered=False, path="/v1/models")
    answer(tracked, 200, SSE, LLAMA_STREAM)
    rig.activity.finish(tracked, 200)
    assert rig.rows() == []
    assert tracked.usage() is None
    assert rig.sample("llamaswap_requests_total", model="m", path="/v1/models", status="200") == 1
    assert rig.sample("llamaswap_tokens_total", model="m", kind="prompt") == 0
    assert {kind for kind, _ in events(sub)} == {INFLIGHT}
    assert rig.store.next_id() == 1  # no activity id was used up


# ---------------------------------------------------------------- events


async def test_events_of_one_request(rig: Rig) -> None:
    sub = rig.bus.subscribe()
    tracked = rig.begin({"X-Forwarded-For": "1.2.3.4"})
    answer(tracked, 200, SSE, LLAMA_STREAM, piece=len(LLAMA_STREAM) // 2)
    rig.activity.finish(tracked, 200)
    seen = events(sub)

    kind, begun = seen[0]
    assert kind == INFLIGHT and begun["operation"] == "upsert"
    assert begun["request"] == {**tracked.to_json(), "bytes": 0}
    assert begun["request"]["client"] == "1.2.3.4"
    kind, progress = seen[1]  # the first chunk is always reported, later ones at most every 0.25 s
    assert kind == INFLIGHT and progress == {
        "operation": "upsert", "request": {**tracked.to_json(), "bytes": len(LLAMA_STREAM) // 2},
    }
    assert all(kind == INFLIGHT and data["operation"] == "upsert" for kind, data in seen[2:-2])
    assert seen[-2] == (ACTIVITY, {**rig.only_row().to_json(), "has_capture": False})
    assert seen[-1] == (INFLIGHT, {"operation": "remove", "id": tracked.id})
    assert seen[-2][1]["timestamp"].endswith("Z") and seen[-2][1]["prompt_tokens"] == 12


async def test_rows_are_stored_without_listeners(rig: Rig) -> None:
    assert rig.bus.active is False
    tracked = rig.begin()
    answer(tracked, 200, SSE, OPENAI_STREAM)
    rig.activity.finish(tracked, 200)
    assert rig.only_row().prompt_tokens == 10


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "headers", "body", "message"),
    [
        (500, JSON, b'{"error":{"message":"model crashed","code":500}}', "model crashed"),
        (400, JSON, b'{"error":"bad request: no messages"}', "bad request: no messages"),
        (404, JSON, b'{"message":"not here"}', "not here"),
        (422, JSON, b'{"detail":"field required"}', "field required"),
        (400, JSON, b'{"error":"","message":"the message"}', "the message"),
        (400, JSON, b'{"error":{"code":1},"detail":"the detail"}', "the detail"),
        (500, JSON, b'{"error":{"code":1}}', '{"error":{"code":1}}'),  # nothing quotable: the text
        (500, JSON, b"[1, 2]", "[1, 2]"),
        (502, {"Content-Type": "text/plain"}, b"  upstream is down\n", "upstream is down"),
        (503, {"Content-Type": "text/plain"}, b"", None),
        (500, JSON, b'{"error":"' + b"m" * 600 + b'"}', "m" * ERROR_MESSAGE),
        (500, {"Content-Type": "text/plain"}, b"t" * 5000, "t" * ERROR_MESSAGE),
        (200, JSON, b'{"error":"not an error status"}', None),
    ],
)
async def test_error_rows_quote_the_answer(
    rig: Rig, status: int, headers: dict[str, str], body: bytes, message: str | None
) -> None:
    tracked = rig.begin()
    answer(tracked, status, headers, body)
    rig.activity.finish(tracked, status)
    row = rig.only_row()
    assert (row.resp_status_code, row.error_msg) == (status, message)
    assert tracked.bytes == len(body)


@pytest.mark.parametrize(
    ("error", "message"), [("no upstream: connection refused", "no upstream: connection refused"),
                           ("e" * 700, "e" * ERROR_MESSAGE)],
)
async def test_the_services_own_error_wins(rig: Rig, error: str, message: str) -> None:
    tracked = rig.begin()
    answer(tracked, 500, JSON, b'{"error":"from upstream"}')
    tracked.error = error
    rig.activity.finish(tracked, 502)
    assert (rig.only_row().resp_status_code, rig.only_row().error_msg) == (502, message)


async def test_error_before_any_answer(rig: Rig) -> None:
    tracked = rig.begin()
    tracked.error = "model 'm' failed to start"
    rig.activity.finish(tracked, 502)
    row = rig.only_row()
    assert (row.resp_status_code, row.resp_content_type, row.error_msg) == (502, "", "model 'm' failed to start")
    assert rig.sample("llamaswap_requests_total", model="m", path=CHAT, status="502") == 1


# ---------------------------------------------------------------- cancel


async def handle(rig: Rig, begun: asyncio.Future[Tracked]) -> None:
    """A request handler that waits for an answer that never comes, as a stuck upstream would."""
    tracked = rig.begin()
    begun.set_result(tracked)
    status = 499
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        status = 503 if tracked.cancelled else 499
        raise
    finally:
        rig.activity.finish(tracked, status)


async def test_cancel_aborts_the_task(rig: Rig) -> None:
    begun: asyncio.Future[Tracked] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(handle(rig, begun))
    tracked = await asyncio.wait_for(begun, WAIT)
    assert tracked.task is task and tracked.cancelled is False
    assert rig.activity.cancel(tracked.id) is True
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert tracked.cancelled is True
    assert rig.activity.inflight() == []
    row = rig.only_row()
    assert (row.resp_status_code, row.error_msg) == (503, CANCELLED)
    assert rig.activity.cancel(tracked.id) is False  # no longer in flight


async def test_cancel_leaves_other_requests_alone(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    begun = [loop.create_future(), loop.create_future()]
    tasks = [asyncio.create_task(handle(rig, future)) for future in begun]
    first, second = await asyncio.wait_for(asyncio.gather(*begun), WAIT)
    assert rig.activity.cancel(second.id) is True
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(tasks[1], WAIT)
    assert tasks[0].done() is False and first.cancelled is False
    assert [entry["id"] for entry in rig.activity.inflight()] == [first.id]
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(tasks[0], WAIT)
    assert first.cancelled is False


async def test_cancel_unknown_or_finished_task(rig: Rig) -> None:
    assert rig.activity.cancel(12345) is False

    async def begin_only() -> Tracked:
        return rig.begin()

    tracked = await asyncio.create_task(begin_only())  # its task is over, it is still listed
    assert [entry["id"] for entry in rig.activity.inflight()] == [tracked.id]
    assert rig.activity.cancel(tracked.id) is False
    assert tracked.cancelled is False and tracked.error is None
