"""Ollama requests as OpenAI requests, and OpenAI answers as Ollama answers (pure)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from llama_swap.dialects import ollama
from llama_swap.dialects.ollama import CHAT, COMPLETIONS, EMBEDDINGS, FOREVER, keep_alive_seconds, translate
from llama_swap.dialects.ollama_answers import OllamaAnswer, control_answer
from llama_swap.dialects.ollama_models import running, show, tag
from llama_swap.errors import HTTPError
from llama_swap.wire.relay import Untranslatable

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U"
HI = [{"role": "user", "content": "hi"}]


def asked(path: str, **body: Any) -> ollama.Asked:
    return translate(path, orjson.dumps(body))


def refused(path: str, raw: bytes) -> str:
    with pytest.raises(HTTPError) as caught:
        translate(path, raw)
    assert caught.value.status == 400
    return caught.value.message


# ---------------------------------------------------------------------------- requests


def test_chat_streams_by_default_and_asks_for_usage() -> None:
    request = asked("/api/chat", model="m", messages=HI)
    assert (request.target, request.stream, request.keep_alive) == (CHAT, True, None)
    assert request.body == {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    plain = asked("/api/chat", model="m", messages=HI, stream=False)
    assert plain.body == {"model": "m", "messages": HI, "stream": False}


def test_options_map_to_sampling_parameters() -> None:
    options = {"temperature": 0.2, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "seed": 7, "num_predict": 12,
               "repeat_penalty": 1.1, "num_keep": 4, "penalize_newline": False, "stop": "END",
               "num_ctx": 8192, "num_gpu": 99, "num_thread": 4, "dry_multiplier": 0.8}
    body = asked("/api/chat", model="m", messages=HI, stream=False, options=options).body
    assert body is not None
    sampling = {key: value for key, value in body.items() if key not in ("model", "messages", "stream")}
    assert sampling == {"temperature": 0.2, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "seed": 7, "max_tokens": 12,
                        "repeat_penalty": 1.1, "n_keep": 4, "penalize_nl": False, "stop": ["END"],
                        "dry_multiplier": 0.8}


@pytest.mark.parametrize("unlimited", [-1, -2])
def test_num_predict_without_a_limit_sets_no_max_tokens(unlimited: int) -> None:
    body = asked("/api/generate", model="m", prompt="p", options={"num_predict": unlimited}).body
    assert body is not None and "max_tokens" not in body


@pytest.mark.parametrize(("options", "message"), [
    ({"temperature": "hot"}, "option 'temperature' must be a number, got \"hot\""),
    ({"top_k": 1.5}, "option 'top_k' must be an integer, got 1.5"),
    ({"seed": True}, "option 'seed' must be an integer, got true"),
    ({"stop": [1]}, "option 'stop' must be a string or a list of strings"),
    ({"penalize_newline": 1}, "option 'penalize_newline' must be true or false, got 1"),
])
def test_bad_options_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    assert refused("/api/chat", orjson.dumps({"model": "m", "messages": HI, "options": options})) == message


def test_format_json_and_schema() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    assert asked("/api/chat", model="m", messages=HI, format="json").body["response_format"] == {  # type: ignore[index]
        "type": "json_object"}
    assert asked("/api/chat", model="m", messages=HI, format=schema).body["response_format"] == {  # type: ignore[index]
        "type": "json_schema", "json_schema": {"name": "format", "schema": schema}}
    assert "response_format" not in asked("/api/chat", model="m", messages=HI, format="").body  # type: ignore[operator]
    raw = asked("/api/generate", model="m", prompt="p", raw=True, format=schema).body
    assert raw is not None and raw["json_schema"] == schema and "response_format" not in raw
    assert refused("/api/chat", b'{"model":"m","messages":[{"role":"user"}],"format":"yaml"}') == (
        'invalid format "yaml": expected "json" or a JSON schema object')


def test_think_switches_the_template_and_sets_the_effort() -> None:
    assert asked("/api/chat", model="m", messages=HI, think=False).body["chat_template_kwargs"] == {  # type: ignore[index]
        "enable_thinking": False}
    body = asked("/api/chat", model="m", messages=HI, think="high").body
    assert body is not None and (body["chat_template_kwargs"], body["reasoning_effort"]) == (
        {"enable_thinking": True}, "high")
    for bad in (b'{}', b'"max"', b'1'):
        assert refused("/api/chat", b'{"model":"m","messages":[{"role":"user"}],"think":' + bad + b'}').startswith(
            "invalid think " + bad.decode())


def test_images_become_data_url_parts_with_their_type() -> None:
    body = asked("/api/chat", model="m", messages=[{"role": "user", "content": "what?", "images": [PNG, JPEG]}]).body
    assert body is not None
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
    ]
    assert refused("/api/chat", b'{"model":"m","messages":[{"role":"user","images":["not base64!"]}]}') == (
        "messages[0].images[0] is not valid base64")


def test_tool_calls_and_results_take_openai_shape() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "thinking": "use the tool",
         "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]
    body = asked("/api/chat", model="m", messages=messages, tools=tools).body
    assert body is not None and body["tools"] == tools
    assistant, result = body["messages"][1:]
    assert assistant == {"role": "assistant", "content": "", "reasoning_content": "use the tool", "tool_calls": [
        {"id": "call_1_0", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}
    assert result == {"role": "tool", "content": "sunny", "name": "weather", "tool_call_id": "call_1_0"}


def test_generate_uses_the_chat_template_unless_raw() -> None:
    templated = asked("/api/generate", model="m", prompt="p", system="be brief", stream=False)
    assert (templated.target, templated.body) == (CHAT, {"model": "m", "stream": False, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "p"}]})
    raw = asked("/api/generate", model="m", prompt="<s>p", raw=True, system="ignored")
    assert (raw.target, raw.body) == (COMPLETIONS, {"model": "m", "prompt": "<s>p", "stream": True,
                                                    "stream_options": {"include_usage": True}})


@pytest.mark.parametrize(("body", "message"), [
    (b'{"model":"m","prompt":"p","suffix":"end"}', "'suffix' (fill-in-the-middle) is not supported"),
    (b'{"model":"m","prompt":"p","template":"{{ .Prompt }}"}', "'template' is not supported"),
    (b'{"model":"m","prompt":"p","raw":true,"images":["' + PNG.encode() + b'"]}', "'images' need the model's chat"),
    (b'{"model":"m","prompt":"p","stream":"yes"}', "'stream' must be true or false, got \"yes\""),
    (b'{"prompt":"p"}', "missing 'model' field in request body"),
    (b'{"model":3,"prompt":"p"}', "'model' must be a non-empty string"),
    (b'[1]', "request body must be a JSON object"),
    (b'{"model"', "request body is not valid JSON"),
])
def test_generate_refusals_name_the_problem(body: bytes, message: str) -> None:
    assert refused("/api/generate", body).startswith(message)


def test_no_prompt_or_messages_only_loads() -> None:
    for request in (asked("/api/chat", model="m"), asked("/api/chat", model="m", messages=[]),
                    asked("/api/generate", model="m", keep_alive=0)):
        assert (request.target, request.body) == (None, None)
    assert asked("/api/generate", model="m", keep_alive=0).keep_alive == 0


def test_embed_and_embeddings() -> None:
    embed = asked("/api/embed", model="e", input=["a", "b"], dimensions=4, truncate=True)
    assert (embed.target, embed.stream, embed.body) == (EMBEDDINGS, False, {
        "model": "e", "input": ["a", "b"], "encoding_format": "float", "dimensions": 4})
    old = asked("/api/embeddings", model="e", prompt="a")
    assert (old.target, old.body) == (EMBEDDINGS, {"model": "e", "input": "a", "encoding_format": "float"})
    assert refused("/api/embed", b'{"model":"e","input":[1,2]}') == "'input' must be a string or a list of strings"
    assert refused("/api/embeddings", b'{"model":"e"}') == "'prompt' must be a string"


@pytest.mark.parametrize(("value", "seconds"), [
    (300, 300.0), (0, 0.0), (-1, FOREVER), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("300ms", 0.3),
    ("-1m", FOREVER), ("90", 90.0), (None, None),
])
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m", "", True, [1]])
def test_bad_keep_alive_is_refused(value: Any) -> None:
    with pytest.raises(HTTPError, match="invalid keep_alive"):
        keep_alive_seconds(value)


# ---------------------------------------------------------------------------- answers


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (event if isinstance(event, bytes) else orjson.dumps(event)) + b"\n\n"
                    for event in events)


def lines(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in data.splitlines()]


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


TIMINGS = {"prompt_n": 11, "prompt_ms": 2.5, "predicted_n": 2, "predicted_ms": 40.0}


def test_a_chat_stream_becomes_ndjson_lines_ending_with_the_counts() -> None:
    answer = OllamaAnswer(asked("/api/chat", model="alias", messages=HI), time.perf_counter())
    answer.granted()
    stream = sse(delta(role="assistant", content=""), delta(content="Hel"), delta(reasoning_content="hmm"),
                 delta(content="lo"), {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                                       "timings": TIMINGS},
                 {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}, b"[DONE]")
    # split anywhere: lines are only written once complete
    out = b"".join(answer.feed(stream[i:i + 7]) for i in range(0, len(stream), 7)) + answer.end()
    parts = lines(out)
    assert [part["message"] for part in parts[:-1]] == [
        {"role": "assistant", "content": "Hel"}, {"role": "assistant", "content": "", "thinking": "hmm"},
        {"role": "assistant", "content": "lo"}]
    assert all(part["model"] == "alias" and part["done"] is False for part in parts[:-1])
    last = parts[-1]
    assert last["created_at"].endswith("Z")
    assert {key: last[key] for key in ("done", "done_reason", "prompt_eval_count", "prompt_eval_duration",
                                       "eval_count", "eval_duration", "message")} == {
        "done": True, "done_reason": "length", "prompt_eval_count": 11, "prompt_eval_duration": 2_500_000,
        "eval_count": 2, "eval_duration": 40_000_000, "message": {"role": "assistant", "content": ""}}
    assert last["total_duration"] >= last["load_duration"] >= 0


def test_a_stream_without_done_ends_with_the_done_line_and_usage_counts() -> None:
    answer = OllamaAnswer(asked("/api/generate", model="m", prompt="p", raw=True), time.perf_counter())
    out = answer.feed(sse({"choices": [{"index": 0, "text": "a b", "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    out += answer.end()
    first, last = lines(out)
    assert (first["response"], first["done"]) == ("a b", False)
    assert (last["response"], last["done"], last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == (
        "", True, "stop", 3, 2)
    assert answer.end() == b""


def test_streamed_tool_call_pieces_arrive_whole() -> None:
    answer = OllamaAnswer(asked("/api/chat", model="m", messages=HI), time.perf_counter())
    out = answer.feed(sse(
        delta(tool_calls=[{"index": 0, "id": "c1", "type": "function", "function": {"name": "weather", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, b"[DONE]"))
    call, last = lines(out)
    assert call["message"]["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]
    assert (last["done"], last["done_reason"]) == (True, "stop")


def test_an_upstream_error_event_ends_the_stream_in_ollamas_shape() -> None:
    answer = OllamaAnswer(asked("/api/chat", model="m", messages=HI), time.perf_counter())
    out = answer.feed(sse(delta(content="a"), {"error": {"message": "context full", "code": 400}}))
    assert lines(out)[-1] == {"error": "context full"}
    assert answer.end() == b""
    assert lines(answer.failed("cut", 502)) == [{"error": "cut"}]


def test_whole_chat_answer() -> None:
    answer = OllamaAnswer(asked("/api/chat", model="m", messages=HI, stream=False), time.perf_counter())
    body = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "ok", "reasoning_content": "think",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    result = orjson.loads(answer.whole(orjson.dumps(body)))
    assert result["message"] == {"role": "assistant", "content": "ok", "thinking": "think",
                                 "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}
    assert (result["done"], result["done_reason"], result["prompt_eval_count"], result["eval_count"]) == (
        True, "stop", 5, 1)


def test_whole_embeddings_answers() -> None:
    body = orjson.dumps({"data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": [0.25]}],
                         "usage": {"prompt_tokens": 4}})
    embed = orjson.loads(OllamaAnswer(asked("/api/embed", model="e", input=["a", "b"]), time.perf_counter()).whole(body))
    assert (embed["model"], embed["embeddings"], embed["prompt_eval_count"]) == ("e", [[0.25], [0.5]], 4)
    old = OllamaAnswer(asked("/api/embeddings", model="e", prompt="a"), time.perf_counter()).whole(body)
    assert orjson.loads(old) == {"embedding": [0.25]}


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"choices": []}'])
def test_an_unreadable_answer_is_untranslatable(body: bytes) -> None:
    with pytest.raises(Untranslatable):
        OllamaAnswer(asked("/api/chat", model="m", messages=HI), time.perf_counter()).whole(body)


def test_control_answers() -> None:
    chat = control_answer(asked("/api/chat", model="m"), "load")
    assert {key: chat[key] for key in ("model", "message", "done", "done_reason")} == {
        "model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"}
    generate = control_answer(asked("/api/generate", model="m", keep_alive=0), "unload")
    assert (generate["response"], generate["done_reason"]) == ("", "unload")


# ---------------------------------------------------------------------------- listings


RECORD = {"id": "llama", "object": "model", "created": 1714000000, "owned_by": "llama-swap", "name": "Llama",
          "capabilities": {"function_calling": True, "vision": True}, "context_length": 8192}


def test_listing_shapes() -> None:
    entry = tag(RECORD)
    assert (entry["name"], entry["model"], entry["modified_at"], entry["size"]) == (
        "llama", "llama", "2024-04-24T23:06:40Z", 0)
    assert len(entry["digest"]) == 64
    shown = show(RECORD)
    assert shown["capabilities"] == ["completion", "tools", "vision"]
    assert shown["model_info"] == {"general.architecture": "llama-swap", "general.name": "Llama",
                                   "llama-swap.context_length": 8192}
    ps = running(RECORD, 1024, 60.0, 1714000000.0)
    assert (ps["size"], ps["expires_at"], ps["context_length"]) == (1024, "2024-04-24T23:07:40Z", 8192)
    assert running(RECORD, 0, None, 1714000000.0)["expires_at"].startswith("2316-")
