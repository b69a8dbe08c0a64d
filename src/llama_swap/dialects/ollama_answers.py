"""OpenAI answers as Ollama answers: a JSON answer as one Ollama object, an SSE stream as
NDJSON lines written as the events arrive, the last one `done: true` with Ollama's counts
and durations (nanoseconds).

Counts and durations come from llama.cpp's `timings` when the upstream sends them (as the
activity log reads them), else from `usage` and the clock. `load_duration` is the time
until the model was ready for the request (a swap, a queue); `total_duration` runs from
the request's arrival to its last line.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import orjson

from llama_swap.dialects.ollama import COMPLETIONS, Asked
from llama_swap.errors import error_body
from llama_swap.wire.relay import Untranslatable

NDJSON = b"application/x-ndjson"
_NS = 1_000_000_000
# OpenAI finish reasons as Ollama's done reasons (a tool call ends with "stop" there).
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}


def created_at(now: float | None = None) -> str:
    """Ollama's timestamp: RFC 3339 in UTC with a `Z`."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def line(payload: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return orjson.dumps(payload) + b"\n"


def control_answer(asked: Asked, reason: str) -> dict[str, Any]:
    """The answer to a chat or generate that only loaded (`load`) or unloaded (`unload`) its model."""
    answer: dict[str, Any] = {"model": asked.model, "created_at": created_at()}
    if asked.kind == "chat":
        answer["message"] = {"role": "assistant", "content": ""}
    else:
        answer["response"] = ""
    answer.update(done=True, done_reason=reason)
    return answer


class OllamaAnswer:
    """One request's answer on its way back: the relay's `Translation` for it."""

    content_type = NDJSON

    def __init__(self, asked: Asked, started: float) -> None:
        self._asked = asked
        self._chat = asked.kind == "chat"
        self._text_field = "text" if asked.target == COMPLETIONS else None  # else the chat delta's content
        self._started = started  # time.perf_counter() when the request arrived
        self._granted: float | None = None
        self._first: float | None = None  # when the first generated text passed
        self._buffer = b""  # a partial SSE line
        self._reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._timings: dict[str, Any] = {}
        self._calls: dict[int, dict[str, Any]] = {}  # streamed tool calls by index, until complete
        self._done = False

    def granted(self) -> None:
        self._granted = time.perf_counter()

    # ------------------------------------------------------------------ whole answers

    def whole(self, body: bytes) -> bytes:
        """A non-streamed answer: one Ollama JSON object (one NDJSON line for a stream)."""
        data = _parsed(body)
        self._note(data)
        if self._asked.kind == "embed":
            return orjson.dumps({"model": self._asked.model, "embeddings": _vectors(data), **self._durations(),
                                 "prompt_eval_count": self._prompt_count()})
        if self._asked.kind == "embeddings":
            vectors = _vectors(data)
            return orjson.dumps({"embedding": vectors[0] if vectors else []})
        choice = _first_choice(data)
        if self._text_field is not None:
            text, thinking, calls = choice.get("text") or "", "", []
        else:
            message = choice.get("message") or {}
            text, thinking = message.get("content") or "", message.get("reasoning_content") or ""
            calls = [_tool_call(call) for call in message.get("tool_calls") or []]
        self._reason = choice.get("finish_reason")
        answer = self._line(text, thinking, calls)
        answer.update(self._final())
        return orjson.dumps(answer)

    # ------------------------------------------------------------------ streams

    def feed(self, data: bytes) -> bytes:
        """The NDJSON lines for a piece of the upstream's SSE stream (possibly none yet)."""
        lines = self._buffer + data
        *complete, self._buffer = lines.split(b"\n")
        out = []
        for raw in complete:
            if not raw.startswith(b"data:") or self._done:
                continue
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                out.append(self._finish())
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue  # not an event this translation knows: skipped, as an Ollama client would
            if isinstance(event, dict):
                out.append(self._event(event))
        return b"".join(out)

    def end(self) -> bytes:
        """After the upstream's stream ended: the done line, if `[DONE]` did not bring it."""
        return b"" if self._done else self._finish()

    def failed(self, message: str, status: int) -> bytes:
        """The line that ends a stream cut short: an error, as an Ollama client reads it."""
        self._done = True
        return error_body(message, status) + b"\n"

    def _event(self, event: dict[str, Any]) -> bytes:
        error = event.get("error")
        if error is not None:  # the upstream's own error event: Ollama's shape, and the end
            self._done = True
            message = error.get("message") if isinstance(error, dict) else error
            return line({"error": str(message)})
        self._note(event)
        choice = _first_choice(event) if event.get("choices") else {}
        if self._text_field is not None:
            text, thinking = choice.get("text") or "", ""
        else:
            delta = choice.get("delta") or {}
            text, thinking = delta.get("content") or "", delta.get("reasoning_content") or ""
            for part in delta.get("tool_calls") or []:
                self._gather(part)
        if choice.get("finish_reason"):
            self._reason = choice["finish_reason"]
        out = b""
        if text or thinking:
            if self._first is None:
                self._first = time.perf_counter()
            out = line(self._line(text, thinking, []))
        if self._reason and self._calls:  # complete now: Ollama sends a call whole
            calls = [_tool_call(self._calls[index]) for index in sorted(self._calls)]
            self._calls.clear()
            out += line(self._line("", "", calls))
        return out

    def _gather(self, part: dict[str, Any]) -> None:
        """A streamed tool call comes in pieces: its name first, its arguments' text in parts."""
        call = self._calls.setdefault(part.get("index", 0), {"function": {"name": "", "arguments": ""}})
        function = part.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def _finish(self) -> bytes:
        self._done = True
        calls = [_tool_call(self._calls[index]) for index in sorted(self._calls)]
        answer = self._line("", "", calls)
        answer.update(self._final())
        return line(answer)

    # ------------------------------------------------------------------ fields

    def _line(self, text: str, thinking: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
        answer: dict[str, Any] = {"model": self._asked.model, "created_at": created_at()}
        if self._chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            answer["message"] = message
        else:
            answer["response"] = text
            if thinking:
                answer["thinking"] = thinking
        answer["done"] = False
        return answer

    def _note(self, event: dict[str, Any]) -> None:
        usage, timings = event.get("usage"), event.get("timings")
        if isinstance(usage, dict):
            self._usage = usage
        if isinstance(timings, dict):
            self._timings = timings

    def _final(self) -> dict[str, Any]:
        reason = self._reason or "stop"
        return {"done": True, "done_reason": _DONE_REASONS.get(reason, reason), **self._durations(),
                "prompt_eval_count": self._prompt_count(), "prompt_eval_duration": self._prompt_ns(),
                "eval_count": _integer(self._timings.get("predicted_n"), self._usage.get("completion_tokens")),
                "eval_duration": self._eval_ns()}

    def _durations(self) -> dict[str, int]:
        now = time.perf_counter()
        granted = self._granted if self._granted is not None else self._started
        return {"total_duration": int((now - self._started) * _NS), "load_duration": int((granted - self._started) * _NS)}

    def _prompt_count(self) -> int:
        return _integer(self._timings.get("prompt_n"), self._usage.get("prompt_tokens"))

    def _prompt_ns(self) -> int:
        measured = self._timings.get("prompt_ms")
        if isinstance(measured, (int, float)):
            return int(measured * 1_000_000)
        if self._first is None or self._granted is None:
            return 0
        return int((self._first - self._granted) * _NS)

    def _eval_ns(self) -> int:
        measured = self._timings.get("predicted_ms")
        if isinstance(measured, (int, float)):
            return int(measured * 1_000_000)
        since = self._first if self._first is not None else self._granted
        return 0 if since is None else int((time.perf_counter() - since) * _NS)


def _parsed(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Untranslatable(f"the upstream's answer is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Untranslatable("the upstream's answer is not a JSON object")
    return data


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Untranslatable("the upstream's answer has no choices")
    return choices[0]


def _vectors(data: dict[str, Any]) -> list[Any]:
    items = data.get("data")
    if not isinstance(items, list):
        raise Untranslatable("the upstream's embeddings answer has no data")
    ordered = sorted((item for item in items if isinstance(item, dict)), key=lambda item: item.get("index", 0))
    return [item.get("embedding") for item in ordered]


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's call (arguments as JSON text) as Ollama's (arguments as an object)."""
    function = call.get("function") or {}
    arguments: Any = function.get("arguments") or "{}"
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            pass  # the model's own malformed text, shown as it is
    return {"function": {"name": function.get("name", ""), "arguments": arguments}}


def _integer(*candidates: Any) -> int:
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return 0

