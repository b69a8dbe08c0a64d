"""Request body rewrites: useModelName, stripParams, setParams, setParamsByID, multipart."""

from __future__ import annotations

import gc
from typing import Any

import orjson
import pytest

from llama_swap.config import ModelConfig, load_config_text
from llama_swap.server.filters import rewrite_request

JSON = "application/json"


def model(settings: str = "") -> ModelConfig:
    """Model `m` with extra YAML lines (indented under the model)."""
    lines = "".join(f"    {line}\n" for line in settings.splitlines())
    config = load_config_text(f"models:\n  m:\n    cmd: llama-server --port ${{PORT}}\n{lines}")
    return config.models["m"]


def rewrite_json(settings: str, body: dict[str, Any], requested: str = "m") -> dict[str, Any]:
    return orjson.loads(rewrite_request(model(settings), requested, JSON, orjson.dumps(body)))


def multipart(fields: list[tuple[str, bytes]], boundary: str = "XyZ") -> tuple[str, bytes]:
    parts = []
    for name, value in fields:
        disposition = f'form-data; name="{name}"' + ('; filename="a.wav"' if name == "file" else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if name == "file":
            head += "Content-Type: audio/wav\r\n"
        parts.append(head.encode() + b"\r\n" + value + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


BODY = {"model": "m", "temperature": 0.2, "top_k": 40, "options": {"a": 1, "b": 2}, "messages": [{"role": "user"}]}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("useModelName: org/real-model", {**BODY, "model": "org/real-model"}),
        (
            "filters: {stripParams: ' top_k, temperature ,,top_k'}",
            {"model": "m", "options": {"a": 1, "b": 2}, "messages": [{"role": "user"}]},
        ),
        ("filters: {strip_params: top_k}", {key: value for key, value in BODY.items() if key != "top_k"}),
        ("filters: {stripParams: options.a}", {**BODY, "options": {"b": 2}}),
        ("filters: {stripParams: messages.0.role}", {**BODY, "messages": [{}]}),
        ("filters: {stripParams: 'missing, options.missing.deeper, messages.5'}", BODY),
        (
            "filters: {setParams: {temperature: 0.7, stop: ['</s>'], cache: true, extra: {x: null}}}",
            {**BODY, "temperature": 0.7, "stop": ["</s>"], "cache": True, "extra": {"x": None}},
        ),
        (
            "filters: {setParams: {options.c: 3, chat_template_kwargs.enable_thinking: false}}",
            {**BODY, "options": {"a": 1, "b": 2, "c": 3}, "chat_template_kwargs": {"enable_thinking": False}},
        ),
        ("filters: {setParams: {top_k.deeper: 1}}", {**BODY, "top_k": {"deeper": 1}}),
    ],
)
def test_each_filter_alone(settings: str, expected: dict[str, Any]) -> None:
    assert rewrite_json(settings, BODY) == expected


@pytest.mark.parametrize(
    "settings",
    [
        "filters: {stripParams: 'model, model.x'}",
        "filters: {setParams: {model: other, model.x: 1}}",
        "filters: {setParamsByID: {m: {model: other}}}",
    ],
)
def test_model_is_protected(settings: str) -> None:
    body = orjson.dumps(BODY)
    assert rewrite_request(model(settings), "m", JSON, body) is body


def test_protected_model_does_not_hide_other_params() -> None:
    assert rewrite_json("filters: {stripParams: 'model,top_k', setParams: {model: x, seed: 1}}", BODY) == {
        **{key: value for key, value in BODY.items() if key != "top_k"},
        "seed": 1,
    }


def test_filters_apply_in_order() -> None:
    settings = """useModelName: upstream-name
filters:
  stripParams: temperature, seed
  setParams: {temperature: 0.5, b: set, a: set}
  setParamsByID:
    m-fast: {temperature: 0.1, a: by-id}"""
    body = {"model": "m-fast", "temperature": 1.0, "seed": 7}
    assert rewrite_json(settings, body, requested="m-fast") == {
        "model": "upstream-name",
        "temperature": 0.1,
        "a": "by-id",
        "b": "set",
    }


def test_set_params_in_sorted_key_order() -> None:
    # `a` replaces the object that `a.b` (sorted after it) then writes into.
    assert rewrite_json("filters: {setParams: {a.b: 2, a: {c: 1}}}", {"model": "m"}) == {
        "model": "m",
        "a": {"c": 1, "b": 2},
    }


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("m", {"model": "m", "n": 2}),
        ("m-fast", {"model": "m-fast", "n": 1}),
        ("m-alias", {"model": "m-alias", "n": 0}),
    ],
)
def test_set_params_by_id_keyed_by_requested_name(requested: str, expected: dict[str, Any]) -> None:
    settings = "aliases: [m-alias]\nfilters: {setParams: {n: 0}, setParamsByID: {m-fast: {n: 1}, m: {n: 2}}}"
    assert rewrite_json(settings, {"model": requested}, requested=requested) == expected


def test_a_new_config_object_gets_its_own_plan() -> None:
    for name in ("first", "second", "third"):
        configured = model(f"useModelName: {name}")
        assert orjson.loads(rewrite_request(configured, "m", JSON, b'{"model":"m"}'))["model"] == name
        del configured
        gc.collect()


def test_set_params_by_id_for_another_name_leaves_body_untouched() -> None:
    body = b'{"model": "m",   "x": 1}'
    assert rewrite_request(model("filters: {setParamsByID: {m-fast: {n: 1}}}"), "m", JSON, body) is body


def test_config_values_are_not_shared_between_requests() -> None:
    configured = model("filters: {setParams: {opts: {a: 1}, opts.b: 2}}")
    first = orjson.loads(rewrite_request(configured, "m", JSON, b'{"model": "m"}'))
    second = orjson.loads(rewrite_request(configured, "m", JSON, b'{"model": "m"}'))
    assert first == second == {"model": "m", "opts": {"a": 1, "b": 2}}
    assert configured.filters.set_params == {"opts": {"a": 1}, "opts.b": 2}


@pytest.mark.parametrize(
    ("settings", "body"),
    [
        ("", b'{"model": "m", "x": 1}'),
        ("useModelName: m", b'{"model": "m", "x": 1}'),
        ("filters: {stripParams: absent}", b'{"model": "m", "x": 1}'),
        ("useModelName: other", b"{not json"),
        ("useModelName: other", b'["model"]'),
        ("useModelName: other", b""),
    ],
)
def test_identity_when_nothing_changes(settings: str, body: bytes) -> None:
    assert rewrite_request(model(settings), "m", JSON, body) is body


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"model=m&prompt=hi"),
        ("text/plain", b"model: m"),
        ("application/octet-stream", b"\x00\x01"),
    ],
)
def test_non_json_bodies_untouched(content_type: str, body: bytes) -> None:
    settings = "useModelName: other\nfilters: {stripParams: prompt, setParams: {x: 1}}"
    assert rewrite_request(model(settings), "m", content_type, body) is body


def test_json_content_type_variants_and_unlabelled_json() -> None:
    configured = model("useModelName: other")
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/x-www-form-urlencoded"):
        assert orjson.loads(rewrite_request(configured, "m", content_type, b' {"model":"m"}')) == {"model": "other"}


def test_multipart_model_rewritten_other_parts_byte_identical() -> None:
    audio = bytes(range(256)) * 16384 + b"\r\n\r\n--XY not the boundary\r\n"
    ctype, body = multipart([("file", audio), ("model", b"m"), ("language", b"en")])
    rewritten = rewrite_request(model("useModelName: whisper-large-v3"), "m", ctype, body)
    assert rewritten == body.replace(b'name="model"\r\n\r\nm\r\n', b'name="model"\r\n\r\nwhisper-large-v3\r\n')
    assert rewritten.endswith(b"--XyZ--\r\n")


def test_multipart_quoted_boundary_and_model_first() -> None:
    ctype, body = multipart([("model", b"m"), ("prompt", b"hi")], boundary="a:b c")
    ctype = 'multipart/form-data; boundary="a:b c"'
    assert rewrite_request(model("useModelName: x"), "m", ctype, body) == body.replace(b"\r\n\r\nm\r\n", b"\r\n\r\nx\r\n")


@pytest.mark.parametrize(
    ("settings", "fields"),
    [
        ("useModelName: m", [("model", b"m")]),
        ("useModelName: x", [("prompt", b"hi")]),
        ("filters: {stripParams: prompt, setParams: {x: 1}}", [("model", b"m"), ("prompt", b"hi")]),
    ],
)
def test_multipart_identity_when_nothing_changes(settings: str, fields: list[tuple[str, bytes]]) -> None:
    ctype, body = multipart(fields)
    assert rewrite_request(model(settings), "m", ctype, body) is body


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--XyZ--\r\n'),
        ("multipart/form-data; boundary=XyZ", b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nm'),
        ("multipart/form-data; boundary=XyZ", b"garbage"),
    ],
)
def test_malformed_multipart_untouched(content_type: str, body: bytes) -> None:
    assert rewrite_request(model("useModelName: x"), "m", content_type, body) is body
