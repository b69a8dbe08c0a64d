"""UsageMeter: token usage and speeds read out of relayed answers, chunk by chunk."""

from __future__ import annotations

import random
from typing import Any, Iterable

import orjson
import pytest

from llama_swap.observe.metrics import Metrics
from llama_swap.observe.usage import MAX_BODY, Usage, UsageMeter, meter_for

SSE = "text/event-stream"
JSON = "application/json"


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return head + b"data: " + payload + b"\n\n"


def measure(chunks: Iterable[bytes], content_type: str = SSE, **kwargs: Any) -> Usage | None:
    meter = UsageMeter(content_type, **kwargs)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.result()


def chat_chunk(content: str | None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    finish = None if content is not None else "stop"
    return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


LLAMA_TIMINGS = {
    "cache_n": 4, "prompt_n": 17, "prompt_ms": 35.2, "prompt_per_token_ms": 2.07, "prompt_per_second": 482.95,
    "predicted_n": 3, "predicted_ms": 61.0, "predicted_per_token_ms": 20.3, "predicted_per_second": 49.18,
}
# llama-server: content chunks, then the finish chunk carries `timings`.
LLAMA_STREAM = b"".join(
    [chat_chunk("Hel"), chat_chunk("lo"), chat_chunk("!"), chat_chunk(None, timings=LLAMA_TIMINGS), sse("[DONE]")]
)
LLAMA_USAGE = Usage(17, 3, 4, 482.95, 49.18)

# OpenAI with stream_options.include_usage: a last chunk with no choices and the usage.
OPENAI_STREAM = b"".join([
    chat_chunk("Hi"),
    chat_chunk(None),
    sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                   "prompt_tokens_details": {"cached_tokens": 16}}}),
    sse("[DONE]"),
])


def responses_event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


RESPONSES_STREAM = b"".join([
    responses_event("response.created", response={"id": "resp_1", "status": "in_progress", "usage": None}),
    responses_event("response.output_text.delta", item_id="msg_1", delta="Hi"),
    responses_event("response.completed", response={
        "id": "resp_1", "status": "completed",
        "usage": {"input_tokens": 31, "output_tokens": 9, "total_tokens": 40,
                  "input_tokens_details": {"cached_tokens": 8}, "output_tokens_details": {"reasoning_tokens": 0}}}),
])

ANTHROPIC_STREAM = b"".join([
    sse({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}}, event="message_start"),
    sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        event="content_block_delta"),
    sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
        event="message_delta"),
    sse({"type": "message_stop"}, event="message_stop"),
])

VLLM_STREAM = b"".join([
    chat_chunk("Hi"),
    sse({"choices": [], "usage": {"prompt_tokens": 110, "completion_tokens": 50,
                                  "prompt_tokens_details": {"cached_tokens": 10}},
         "metrics": {"time_to_first_token_ms": 200.0, "mean_itl_ms": 25.0}}),
    sse("[DONE]"),
])


def test_llama_cpp_stream_timings_give_counts_and_rates() -> None:
    assert measure([LLAMA_STREAM]) == LLAMA_USAGE


def test_openai_stream_with_include_usage() -> None:
    assert measure([OPENAI_STREAM]) == Usage(20, 7, 16, None, None)


def test_responses_api_stream_reads_response_usage() -> None:
    assert measure([RESPONSES_STREAM]) == Usage(31, 9, 8, None, None)


def test_anthropic_stream_message_delta_completes_message_start() -> None:
    assert measure([ANTHROPIC_STREAM]) == Usage(25, 15, 5, None, None)


def test_vllm_metrics_give_rates() -> None:
    # prompt rate: uncached prompt tokens over the time to first token; generation: 1000 / mean ITL
    assert measure([VLLM_STREAM]) == Usage(110, 50, 10, 500.0, 40.0)


def test_timings_override_usage_counts() -> None:
    stream = chat_chunk(None, usage={"prompt_tokens": 99, "completion_tokens": 99,
                                     "prompt_tokens_details": {"cached_tokens": 1}},
                        timings={"prompt_n": 12, "predicted_n": 6, "prompt_per_second": 100.0})
    assert measure([stream]) == Usage(12, 6, 1, 100.0, None)


def test_last_timings_win() -> None:
    stream = chat_chunk("a", timings={"prompt_n": 1, "predicted_n": 1}) + chat_chunk(None, timings=LLAMA_TIMINGS)
    assert measure([stream]) == LLAMA_USAGE


@pytest.mark.parametrize("stream", [LLAMA_STREAM, OPENAI_STREAM, RESPONSES_STREAM, ANTHROPIC_STREAM, VLLM_STREAM])
def test_split_at_every_position(stream: bytes) -> None:
    whole = measure([stream])
    for cut in range(len(stream) + 1):
        assert measure([stream[:cut], stream[cut:]]) == whole, f"split at {cut}"


def test_byte_by_byte() -> None:
    assert measure(LLAMA_STREAM[i:i + 1] for i in range(len(LLAMA_STREAM))) == LLAMA_USAGE


def test_crlf_lines_and_no_space_after_colon() -> None:
    line = b'data:{"usage":{"prompt_tokens":3,"completion_tokens":4}}\r\n\r\n'
    assert measure([line]) == Usage(3, 4)


def test_last_line_without_newline() -> None:
    assert measure([b'data: {"usage":{"prompt_tokens":3,"completion_tokens":4}}']) == Usage(3, 4)


def test_stream_without_usage() -> None:
    assert measure([chat_chunk("Hi"), chat_chunk(None), sse("[DONE]")]) is None


def test_the_word_usage_in_content_is_not_usage() -> None:
    assert measure([chat_chunk('the "usage" key'), chat_chunk('"timings"')]) is None


def test_overlong_sse_line_is_dropped_not_kept() -> None:
    meter = UsageMeter(SSE, max_body=1000)
    for piece in [b'data: {"pad":"', *[b"x" * 100] * 30, b"x" * 2000]:
        meter.feed(piece)
        assert len(meter._partial) <= 1000 + 100  # at most one bounded partial line is held
    # Still the overlong line, though it looks like an event: it must not be read.
    meter.feed(b'data: {"timings":{"prompt_n":50,"predicted_n":50}}\n\n')
    meter.feed(sse({"usage": {"prompt_tokens": 2, "completion_tokens": 3}}))
    assert meter.result() == Usage(2, 3)


def test_json_body_in_pieces() -> None:
    body = orjson.dumps({"id": "chatcmpl-1", "choices": [],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
                         "timings": {**LLAMA_TIMINGS, "prompt_n": 9, "predicted_n": 4}})
    assert measure([body[:10], body[10:50], body[50:]], JSON) == Usage(9, 4, 4, 482.95, 49.18)


def test_json_usage_only() -> None:
    body = orjson.dumps({"object": "list", "data": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}})
    assert measure([body], "application/json; charset=utf-8") == Usage(prompt_tokens=5)


def test_json_anthropic_message() -> None:
    body = orjson.dumps({"type": "message", "usage": {"input_tokens": 12, "output_tokens": 30}})
    assert measure([body], JSON) == Usage(12, 30)


def test_json_infill_array_uses_last_timings() -> None:
    body = orjson.dumps([{"content": "a", "timings": {"prompt_n": 1, "predicted_n": 1}},
                         {"content": "b", "timings": LLAMA_TIMINGS}])
    assert measure([body], JSON) == LLAMA_USAGE


def test_oversize_json_body_is_given_up() -> None:
    usage = orjson.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    padded = usage[:-1] + b',"pad":"' + b"x" * MAX_BODY + b'"}'
    meter = UsageMeter(JSON)
    for i in range(0, len(padded), 65536):
        meter.feed(padded[i:i + 65536])
    assert meter.result() is None
    assert len(meter._body) == 0  # nothing kept past the bound


def test_json_within_bound() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    assert measure([body], JSON, max_body=len(body)) == Usage(1, 2)
    assert measure([body], JSON, max_body=len(body) - 1) is None


@pytest.mark.parametrize("content_type", ["text/plain", "audio/mpeg", "application/octet-stream", ""])
def test_other_content_types_give_nothing(content_type: str) -> None:
    assert measure([LLAMA_STREAM], content_type) is None


@pytest.mark.parametrize(
    "lines",
    [
        [b'data: {"usage": {"prompt_tokens": 3'],  # cut off
        [b'data: {"usage": "lots"}\n\n'],
        [b'data: {"usage": [1, 2]}\n\n', b'data: ["usage", "timings"]\n\n'],
        [b'data: {"usage": {"prompt_tokens": -5, "completion_tokens": true}}\n\n'],
        [b'data: {"usage": {"prompt_tokens": "12", "completion_tokens": null}}\n\n'],
        [b'data: {"timings": "fast", "metrics": 3}\n\n'],
        [b'data: {"response": "x", "message": ["usage"]}\n\n'],
        [b'data: {"usage": {"prompt_tokens_details": 4, "input_tokens_details": {"cached_tokens": "x"}}}\n\n'],
        [b'data: {"usage": NaN}\n\n', b'data: {"usage": 1e999}\n\n'],
        [b"\xff\xfe\x00 usage timings \"usage\" \n\n"],
        [b"event: x\n", b"retry: 10\n", b": comment \"usage\"\n\n"],
        [b'data: {"metrics": {"time_to_first_token_ms": 0, "mean_itl_ms": -3}}\n\n'],
    ],
)
def test_garbage_gives_no_usage(lines: list[bytes]) -> None:
    assert measure(lines) is None


def test_garbage_json_bodies_give_no_usage() -> None:
    for body in [b"", b"{", b"[]", b"[1]", b'"usage"', b"null", b'{"usage": null}', b"\x00\x01", b"[[[[" * 300]:
        assert measure([body], JSON) is None


def test_negative_vllm_prompt_rate_is_dropped() -> None:
    stream = sse({"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10}},
                  "metrics": {"time_to_first_token_ms": 100}})
    assert measure([stream]) == Usage(5, None, 10, None, None)


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    alphabet = b'data: {}[]",:\n\r0123456789-.eE usage timings metrics prompt_n tokens \x00\xff'
    for _ in range(300):
        blob = bytes(rng.choice(alphabet) for _ in range(rng.randrange(400)))
        pieces = [blob[i:i + rng.randrange(1, 50)] for i in range(0, len(blob), 50)]
        for content_type in (SSE, JSON):
            measure(pieces, content_type)


def test_result_twice_is_the_same() -> None:
    meter = UsageMeter(JSON)
    meter.feed(orjson.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
    assert meter.result() == meter.result() == Usage(1, 2)


@pytest.mark.parametrize(
    ("status", "headers", "meters"),
    [
        (200, {"Content-Type": SSE}, True),
        (201, {"Content-Type": "application/json; charset=utf-8"}, True),
        (200, {"Content-Type": "audio/mpeg"}, False),
        (200, {}, False),
        (500, {"Content-Type": JSON}, False),
        (404, {"Content-Type": SSE}, False),
        (200, {"Content-Type": JSON, "Content-Encoding": "gzip"}, False),
        (200, {"Content-Type": JSON, "Content-Encoding": "identity"}, True),
    ],
)
def test_meter_for(status: int, headers: dict[str, str], meters: bool) -> None:
    meter = meter_for(status, headers.get("Content-Type", ""), headers.get("Content-Encoding", "identity"))
    assert (meter is not None) is meters


def test_record_usage_into_metrics() -> None:
    metrics = Metrics(["m"])
    metrics.series("m").record_usage(Usage(10, 5, 2, 480.0, 40.0))
    metrics.series("m").record_usage(Usage(1, 1, None, None, None))
    value = metrics.registry.get_sample_value
    assert value("llamaswap_tokens_total", {"model": "m", "kind": "prompt"}) == 11
    assert value("llamaswap_tokens_total", {"model": "m", "kind": "generated"}) == 6
    assert value("llamaswap_tokens_total", {"model": "m", "kind": "cached"}) == 2
    assert value("llamaswap_prompt_tokens_per_second_count", {"model": "m"}) == 1
    assert value("llamaswap_prompt_tokens_per_second_sum", {"model": "m"}) == 480.0
    assert value("llamaswap_generation_tokens_per_second_sum", {"model": "m"}) == 40.0
