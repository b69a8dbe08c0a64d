"""Token usage and speed an upstream reports, read from its answer as it is relayed.

The relay hands every chunk to a `UsageMeter`; at the end `result()` gives what the
upstream said about the request: OpenAI-style `usage` (also `response.usage` of the
Responses API and `message.usage` of Anthropic's), llama.cpp's `timings` (which override
the counts and give the rates) and vLLM's `metrics`. The meter sits on the hot path, so an
SSE stream is scanned, not parsed: only a `data:` line that mentions one of those keys is
decoded, and no more than one partial line is ever kept. A JSON body is kept (up to a
bound) and parsed once at the end. Nothing in here raises on bad data: it just finds no
usage.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import orjson

MAX_BODY = 1 << 20  # a JSON answer, or one SSE line, longer than this is not read

# Keys that make a `data:` line worth decoding; searched as bytes, which is cheap.
_USAGE, _TIMINGS, _METRICS = b'"usage"', b'"timings"', b'"metrics"'
_SSE, _JSON = "text/event-stream", "application/json"
_HOLDERS = ("response", "message")  # objects whose own `usage` counts too (Responses API, Anthropic)
_CACHED_KEYS = (("cache_read_input_tokens",), ("input_tokens_details", "cached_tokens"),
                ("prompt_tokens_details", "cached_tokens"))
# Stands in for the rest of an SSE line too long to keep: it can never parse as an event.
_OVERLONG = b"\0"


class Usage(NamedTuple):
    """What the upstream reported for one request; None where it said nothing (a tuple:
    one is built per request)."""

    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    cached_tokens: int | None = None
    prompt_per_second: float | None = None
    generation_per_second: float | None = None
    draft_tokens: int | None = None  # speculative decoding: tokens drafted ...
    accepted_tokens: int | None = None  # ... and how many of them were accepted


def meter_for(status: int, content_type: str, content_encoding: str = "identity") -> UsageMeter | None:
    """A meter for a successful answer it can read; None (nothing to do per chunk) otherwise."""
    if not 200 <= status < 300 or content_encoding != "identity":
        return None  # a compressed body would only be scanned in vain
    kind = _kind(content_type)
    return UsageMeter(kind) if kind == _SSE or kind == _JSON else None


def _kind(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class UsageMeter:
    """Reads the usage out of one response body, fed chunk by chunk."""

    feed: Callable[[bytes], None]
    """Called with every chunk of the body, in order; bound per content type at creation."""

    def __init__(self, content_type: str, *, max_body: int = MAX_BODY) -> None:
        kind = content_type if content_type == _SSE or content_type == _JSON else _kind(content_type)
        self._max = max_body
        self._partial = b""  # SSE: the line the last chunk ended in the middle of
        self._body: list[bytes] = []  # JSON: the body so far, as it came (usually one chunk)
        self._size = 0
        self._prompt: int | None = None
        self._generated: int | None = None
        self._cached: int | None = None
        self._timings: dict[str, Any] | None = None
        self._metrics: dict[str, Any] | None = None
        if kind == _SSE:
            self.feed = self._scan_sse
        elif kind == _JSON:
            self.feed = self._keep_json
        else:
            self.feed = self._ignore

    def result(self) -> Usage | None:
        """What the body said, once it has all been fed; None if it reported nothing."""
        if self._partial:  # a last line without its newline
            self._scan_sse(b"\n")
        if self._body:
            body, self._body = self._body, []
            self._take_json(body[0] if len(body) == 1 else b"".join(body))
        return _combine(self._prompt, self._generated, self._cached, self._timings, self._metrics)

    def _ignore(self, chunk: bytes) -> None:
        """Bodies that carry no usage, and JSON bodies too long to keep."""

    def _scan_sse(self, chunk: bytes) -> None:
        if self._partial:
            chunk = self._partial + chunk
        end = chunk.rfind(b"\n") + 1
        lines, self._partial = chunk[:end], chunk[end:]  # whole slices are free: no copy
        if len(self._partial) > self._max:
            self._partial = _OVERLONG
        if _mentions_usage(lines):
            for line in lines.split(b"\n"):
                if _mentions_usage(line):
                    self._take_sse_line(line)

    def _take_sse_line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        try:
            event = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict):
            self._take_event(event)

    def _keep_json(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max:
            self._body = []
            self.feed = self._ignore
            return
        self._body.append(chunk)

    def _take_json(self, body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(data, list):  # `/infill` answers an array; the last element has the timings
            last = data[-1] if data else None
            data = {"timings": last.get("timings")} if isinstance(last, dict) else None
        if isinstance(data, dict):
            self._take_event(data)

    def _take_event(self, event: dict[str, Any]) -> None:
        """Later reports win, except that a zero never replaces a count already seen
        (Anthropic's `message_delta` reports `output_tokens` after `message_start` gave 0)."""
        self._take_usage(event.get("usage"))
        for name in _HOLDERS:
            holder = event.get(name)
            if isinstance(holder, dict):
                self._take_usage(holder.get("usage"))
        timings = event.get("timings")
        if isinstance(timings, dict):
            self._timings = timings
        metrics = event.get("metrics")
        if isinstance(metrics, dict):
            self._metrics = metrics

    def _take_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        prompt = _first_count(usage, "prompt_tokens", "input_tokens")
        if prompt is not None and (self._prompt is None or prompt > 0):
            self._prompt = prompt
        generated = _first_count(usage, "completion_tokens", "output_tokens")
        if generated is not None and (self._generated is None or generated > 0):
            self._generated = generated
        if "cache_read_input_tokens" not in usage and "input_tokens_details" not in usage \
                and "prompt_tokens_details" not in usage:
            return  # no cached count to look for
        for path in _CACHED_KEYS:
            cached = _count(_dig(usage, path))
            if cached is not None:
                self._cached = cached
                break


def _mentions_usage(data: bytes) -> bool:
    # `find`, not `in`: bytes.__contains__ first tries the needle as an int, which costs more.
    return data.find(_USAGE) >= 0 or data.find(_TIMINGS) >= 0 or data.find(_METRICS) >= 0


def _combine(
    prompt: int | None,
    generated: int | None,
    cached: int | None,
    timings: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
) -> Usage | None:
    """llama.cpp's `timings` override the counts and give the rates; vLLM's `metrics` give rates."""
    if timings is None and metrics is None:  # plain `usage` counts (OpenAI style): no rates
        return None if prompt is None and generated is None and cached is None else Usage(prompt, generated, cached)
    prompt_rate: float | None = None
    generation_rate: float | None = None
    draft: int | None = None
    accepted: int | None = None
    if timings is not None:
        prompt = _or(_count(timings.get("prompt_n")), prompt)
        generated = _or(_count(timings.get("predicted_n")), generated)
        cached = _or(_count(timings.get("cache_n")), cached)
        prompt_rate = _rate(timings.get("prompt_per_second"))
        generation_rate = _rate(timings.get("predicted_per_second"))
        draft = _count(timings.get("draft_n"))
        accepted = _count(timings.get("draft_n_accepted"))
    if metrics is not None:
        ttft_ms = _rate(metrics.get("time_to_first_token_ms"))
        if ttft_ms and prompt is not None:
            prompt_rate = _rate((prompt - (cached or 0)) * 1000 / ttft_ms)
        itl_ms = _rate(metrics.get("mean_itl_ms"))
        if itl_ms:
            generation_rate = 1000 / itl_ms
        speculative = metrics.get("speculative_decoding")
        if isinstance(speculative, dict):
            draft = _count(speculative.get("num_draft_tokens"))
            accepted = _count(speculative.get("num_accepted_draft_tokens"))
    values = (prompt, generated, cached, prompt_rate, generation_rate, draft, accepted)
    return None if values == _NOTHING else Usage(*values)


_NOTHING = (None,) * 7


def _first_count(usage: dict[str, Any], key: str, other: str) -> int | None:
    value = _count(usage.get(key))
    return value if value is not None else _count(usage.get(other))


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> object:
    value: object = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _or(value: int | None, fallback: int | None) -> int | None:
    return fallback if value is None else value


def _count(value: object) -> int | None:
    """A token count, or None for anything that is not one (so counters never go down)."""
    if type(value) is int:  # the usual case, without the float round trip
        return value if value >= 0 else None
    number = _rate(value)
    return None if number is None else int(number)


def _rate(value: object) -> float | None:
    """A non-negative finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        return None
    return float(value)
