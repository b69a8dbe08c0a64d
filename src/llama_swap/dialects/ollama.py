"""Ollama's inference requests as OpenAI requests for the model's server.

`/api/chat` and `/api/generate` become `/v1/chat/completions` (a raw generate:
`/v1/completions`), `/api/embed` and `/api/embeddings` become `/v1/embeddings`. Ollama's
`options` become sampling parameters, `format` a `response_format`, `think` the chat
template's thinking switch, images `image_url` parts, tool calls OpenAI's shape. A chat
without messages or a generate without a prompt only loads the model (with `keep_alive: 0`:
unloads it), as in Ollama. Anything malformed is a 400 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, NamedTuple

import orjson

from llama_swap.errors import HTTPError
from llama_swap.server.extract import json_object

Kind = Literal["chat", "generate", "embed", "embeddings"]

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
PATHS: dict[str, Kind] = {"/api/chat": "chat", "/api/generate": "generate", "/api/embed": "embed",
                          "/api/embeddings": "embeddings"}
FOREVER = -1.0  # a keep_alive that never unloads

# Ollama option -> the OpenAI / llama-server body field it sets.
SAMPLING = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n", "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta", "num_keep": "n_keep", "tfs_z": "tfs_z",
    "penalize_newline": "penalize_nl",
}
# Options that choose how Ollama loads a model: a model's server is started by its `cmd`, so these are dropped.
LOAD_TIME = frozenset({
    "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all", "vocab_only",
    "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_gqa", "rope_frequency_base",
    "rope_frequency_scale",
})
_INTEGER_OPTIONS = frozenset({"top_k", "seed", "repeat_last_n", "mirostat", "num_keep", "num_predict"})
_FLAG_OPTIONS = frozenset({"penalize_newline"})
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_THINK_LEVELS = frozenset({"low", "medium", "high"})


class Asked(NamedTuple):
    """An Ollama request, translated."""

    kind: Kind
    model: str  # the name the client used
    stream: bool  # the client wants NDJSON lines
    keep_alive: float | None  # seconds the model stays loaded when idle (FOREVER: never unloaded); None: not asked
    target: str | None  # the OpenAI path to send to; None: only load (or unload) the model
    body: dict[str, Any] | None  # the OpenAI request


def translate(path: str, raw: bytes) -> Asked:
    """The OpenAI request for an Ollama request to ``path`` (one of `PATHS`)."""
    kind = PATHS[path]
    data = json_object(raw)
    model = data.get("model")
    if model is None:
        raise HTTPError(400, "missing 'model' field in request body")
    if not isinstance(model, str) or not model:
        raise HTTPError(400, "'model' must be a non-empty string")
    keep_alive = keep_alive_seconds(data.get("keep_alive"))
    if kind == "embed" or kind == "embeddings":
        return Asked(kind, model, False, keep_alive, EMBEDDINGS, _embeddings(kind, model, data))
    stream = _flag(data, "stream", True)  # Ollama streams unless told not to
    if kind == "chat":
        messages = data.get("messages")
        if messages is None or messages == []:
            return Asked(kind, model, stream, keep_alive, None, None)
        body = {"model": model, "messages": chat_messages(messages)}
        tools = data.get("tools")
        if tools is not None and tools != []:
            if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
                raise HTTPError(400, "'tools' must be a list of objects")
            body["tools"] = tools
        target = CHAT
    else:
        prompt = _text(data, "prompt")
        images = _images(data.get("images"), "images")
        if not prompt and not images:
            return Asked(kind, model, stream, keep_alive, None, None)
        target, body = _generate(model, data, prompt, images)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}  # the counts of the last line
    body.update(sampling(data.get("options")))
    _format(body, data.get("format"), target)
    if target == CHAT:
        _think(body, data.get("think"))
    return Asked(kind, model, stream, keep_alive, target, body)


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(400, f"'{name}' must be true or false, got {orjson.dumps(value).decode()}")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HTTPError(400, f"'{name}' must be a string, got {type(value).__name__}")
    return value


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's `keep_alive`: a number of seconds or a Go duration (`"5m"`, `"1h30m"`,
    `"-1"`); negative means never unload. None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise HTTPError(400, f"invalid keep_alive {value!r}: expected seconds or a duration such as \"5m\"")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    else:
        raise HTTPError(400, f"invalid keep_alive {orjson.dumps(value).decode()}: expected seconds or a duration "
                             "such as \"5m\"")
    return FOREVER if seconds < 0 else seconds


def _duration(text: str) -> float:
    """A number of seconds, or Go's `time.ParseDuration` syntax."""
    try:
        return float(text)
    except ValueError:
        pass
    sign, rest = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    parts = _DURATION.findall(rest)
    if not rest or "".join(number + unit for number, unit in parts) != rest:
        raise HTTPError(400, f"invalid keep_alive {text!r}: expected seconds or a duration such as \"5m\" or \"1h30m\"")
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def sampling(options: Any) -> dict[str, Any]:
    """Ollama's `options` as body fields: sampling options renamed (`num_predict` is
    `max_tokens`, -1 and -2 meaning no limit), load-time options dropped, any other key
    (llama-server's own samplers, e.g. `dry_multiplier`) passed on as it is."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise HTTPError(400, "'options' must be an object")
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if name in LOAD_TIME or value is None:
            continue
        if name == "stop":
            fields["stop"] = _stops(value)
            continue
        if name in SAMPLING or name == "num_predict":
            _check_option(name, value)
        if name == "num_predict":
            if value >= 0:
                fields["max_tokens"] = value
        else:
            fields[SAMPLING.get(name, name)] = value
    return fields


def _check_option(name: str, value: Any) -> None:
    if name in _FLAG_OPTIONS:
        if not isinstance(value, bool):
            raise HTTPError(400, f"option '{name}' must be true or false, got {orjson.dumps(value).decode()}")
        return
    kind: tuple[type, ...] = (int,) if name in _INTEGER_OPTIONS else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if name in _INTEGER_OPTIONS else "a number"
        raise HTTPError(400, f"option '{name}' must be {what}, got {orjson.dumps(value).decode()}")


def _stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise HTTPError(400, "option 'stop' must be a string or a list of strings")


def _format(body: dict[str, Any], value: Any, target: str) -> None:
    """`format: "json"` or a JSON schema: the answer is constrained to it."""
    if value is None or value == "":
        return
    if value == "json":
        schema: dict[str, Any] | None = None
    elif isinstance(value, dict):
        schema = value
    else:
        raise HTTPError(400, f"invalid format {orjson.dumps(value).decode()}: expected \"json\" or a JSON schema object")
    if target == COMPLETIONS:  # llama-server's completions take the schema itself
        body["json_schema"] = schema if schema is not None else {"type": "object"}
    elif schema is None:
        body["response_format"] = {"type": "json_object"}
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}


def _think(body: dict[str, Any], value: Any) -> None:
    """`think`: the chat template's thinking switch; a level is also the reasoning effort."""
    if value is None:
        return
    if isinstance(value, bool):
        body["chat_template_kwargs"] = {"enable_thinking": value}
    elif isinstance(value, str) and value in _THINK_LEVELS:
        body["chat_template_kwargs"] = {"enable_thinking": True}
        body["reasoning_effort"] = value
    else:
        raise HTTPError(400, f"invalid think {orjson.dumps(value).decode()}: expected true, false, \"low\", "
                             "\"medium\" or \"high\"")


def chat_messages(messages: Any) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI's: images as `image_url` parts, `thinking` as
    `reasoning_content`, tool calls with ids and JSON-text arguments, and each tool result
    tied to the call it answers (by its id, else the latest call of that tool)."""
    if not isinstance(messages, list):
        raise HTTPError(400, "'messages' must be a list of objects")
    converted = []
    call_ids: dict[str, str] = {}  # tool name -> the id of its latest call
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise HTTPError(400, f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise HTTPError(400, f"messages[{index}].role must be a non-empty string")
        content = _text(message, "content")
        images = _images(message.get("images"), f"messages[{index}].images")
        out: dict[str, Any] = {"role": role, "content": _parts(content, images) if images else content}
        thinking = _text(message, "thinking")
        if thinking:
            out["reasoning_content"] = thinking
        calls = message.get("tool_calls")
        if calls:
            out["tool_calls"] = _tool_calls(calls, index, call_ids)
        if role == "tool":
            name = _text(message, "tool_name")
            call_id = message.get("tool_call_id") or call_ids.get(name)
            if name:
                out["name"] = name
            if isinstance(call_id, str):
                out["tool_call_id"] = call_id
        converted.append(out)
    return converted


def _tool_calls(calls: Any, index: int, call_ids: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise HTTPError(400, f"messages[{index}].tool_calls must be a list")
    converted = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise HTTPError(400, f"messages[{index}].tool_calls[{number}] must have a function with a name")
        assert isinstance(function, dict) and isinstance(call, dict)
        arguments = function.get("arguments", {})
        call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{index}_{number}"
        call_ids[name] = call_id
        converted.append({
            "id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                         else orjson.dumps(arguments).decode()},
        })
    return converted


def _images(value: Any, where: str) -> list[str]:
    """Base64 images, checked (a bad one is a 400 rather than a confused model server)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(image, str) for image in value):
        raise HTTPError(400, f"'{where}' must be a list of base64 strings")
    for number, image in enumerate(value):
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, f"{where}[{number}] is not valid base64") from None
    return value


def _parts(text: str, images: list[str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for image in images:
        parts.append({"type": "image_url", "image_url": {"url": f"data:{_media_type(image)};base64,{image}"}})
    return parts


def _media_type(image: str) -> str:
    """The image's type from its first bytes (a data URL must name one)."""
    head = base64.b64decode(image[:16] + "=" * (-len(image[:16]) % 4))
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def _generate(model: str, data: dict[str, Any], prompt: str, images: list[str]) -> tuple[str, dict[str, Any]]:
    """A raw prompt goes to the completions endpoint as it is; otherwise the model's chat
    template wraps `system` and `prompt` (as Ollama's template would)."""
    if _text(data, "suffix"):
        raise HTTPError(400, "'suffix' (fill-in-the-middle) is not supported by /api/generate here; "
                             "llama-server's /infill is reachable as /upstream/<model>/infill")
    if _text(data, "template"):
        raise HTTPError(400, "'template' is not supported: the model's server applies its own chat template "
                             "(send raw: true with a formatted prompt instead)")
    if _flag(data, "raw", False):
        if images:
            raise HTTPError(400, "'images' need the model's chat template: send them without raw: true")
        return COMPLETIONS, {"model": model, "prompt": prompt}
    messages: list[dict[str, Any]] = []
    system = _text(data, "system")
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _parts(prompt, images) if images else prompt})
    return CHAT, {"model": model, "messages": messages}


def _embeddings(kind: Kind, model: str, data: dict[str, Any]) -> dict[str, Any]:
    """`/api/embed` (`input`: a text or a list of texts) or the older `/api/embeddings` (`prompt`)."""
    if kind == "embeddings":
        text = data.get("prompt")
        if not isinstance(text, str):
            raise HTTPError(400, "'prompt' must be a string")
        return {"model": model, "input": text, "encoding_format": "float"}
    texts = data.get("input")
    if not (isinstance(texts, str) or isinstance(texts, list) and all(isinstance(text, str) for text in texts)):
        raise HTTPError(400, "'input' must be a string or a list of strings")
    body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
    dimensions = data.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
            raise HTTPError(400, "'dimensions' must be a positive integer")
        body["dimensions"] = dimensions
    return body
