"""Property tests of the pure functions every request goes through, in-process (cheap, so
many examples): the model extractor, the config loader, the usage meter, the request-target
check, the activity query and the credential reader.

Each property is either "never raises anything but its own error" (the error the service
turns into a 4xx) or a round trip (what was put in is what is found).
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
from typing import Any
from urllib.parse import quote, unquote, urlencode

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from multidict import MultiDict

from llama_swap.config import load_config_text
from llama_swap.config.fields import ConfigError
from llama_swap.errors import HTTPError
from llama_swap.observe.store import ActivityRow, ActivityStore
from llama_swap.observe.usage import UsageMeter
from llama_swap.server.api import parse_activity_query
from llama_swap.server.auth import presented_key, target_problem
from llama_swap.server.extract import model_from_body, model_from_query
from tests.fuzz.strategies import (
    BOUNDARY_CHARS,
    CONTENT_TYPES,
    bodies,
    json_values,
    multipart_requests,
    wrong_model_types,
)
from tests.fuzz.support import fuzz

# --------------------------------------------------------------------------- model extraction

content_types = st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=30))


def _found_or_refused(content_type: str, body: bytes) -> str | None:
    """The extractor's contract: a non-empty name, None, or a 400 with a message."""
    try:
        name = model_from_body(content_type, body)
    except HTTPError as exc:
        assert exc.status == 400 and exc.message.strip(), exc.message
        return None
    assert name is None or (isinstance(name, str) and name), repr(name)
    return name


@fuzz(600)
@given(content_type=content_types, body=bodies)
def test_model_from_body_finds_a_name_or_refuses_with_400(content_type: str, body: bytes) -> None:
    _found_or_refused(content_type, body)


@fuzz(300)
@given(form=multipart_requests())
def test_model_from_multipart_finds_a_name_or_refuses_with_400(form: tuple[str, bytes]) -> None:
    _found_or_refused(*form)


NOT_MULTIPART = ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "application/octet-stream"]


@fuzz(300)
@given(document=st.dictionaries(st.text(max_size=10), json_values, max_size=5), name=st.text(min_size=1),
       content_type=st.sampled_from(NOT_MULTIPART), space=st.sampled_from([b"", b" ", b"\r\n\t "]))
def test_the_model_of_a_json_object_is_found_whatever_its_label(
    document: dict[str, Any], name: str, content_type: str, space: bytes
) -> None:
    document["model"] = name
    assert model_from_body(content_type, space + orjson.dumps(document)) == name


@fuzz(200)
@given(value=wrong_model_types, document=st.dictionaries(st.text(max_size=10), json_values, max_size=3))
def test_a_model_of_the_wrong_type_is_a_400(value: Any, document: dict[str, Any]) -> None:
    document["model"] = value
    try:
        model_from_body("application/json", orjson.dumps(document))
    except HTTPError as exc:
        assert exc.status == 400 and "'model'" in exc.message
    else:
        raise AssertionError(f"accepted {value!r} as a model name")


@fuzz(200)
@given(fields=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "model"), st.text(max_size=20), max_size=3),
       name=st.text(min_size=1), model_first=st.booleans())
def test_the_model_of_a_urlencoded_form_is_found(fields: dict[str, str], name: str, model_first: bool) -> None:
    pairs = [("model", name), *fields.items()] if model_first else [*fields.items(), ("model", name)]
    assert model_from_body("application/x-www-form-urlencoded", urlencode(pairs).encode()) == name


# A field value that survives as itself: no CR or LF (a header-like line would be a
# different body), and not the delimiter.
field_values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=60)


@st.composite
def forms_naming_a_model(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    """A well-formed multipart form whose first `model` field names a model (or none does):
    the Content-Type, the body and the name expected."""
    boundary = draw(st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=70))
    delimiter = b"--" + boundary.encode()
    parts: list[bytes] = []
    expected: str | None = None
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["model", "file", "text"]))
        if kind == "model":
            value = draw(field_values)
            quoted = draw(st.booleans())
            header = b'Content-Disposition: form-data; name="model"' if quoted else b"Content-Disposition: form-data; name=model"
            if expected is None:
                expected = value.strip()
            parts.append(header + b"\r\n\r\n" + value.encode())
        elif kind == "file":
            content = draw(st.binary(max_size=200))
            parts.append(b'Content-Disposition: form-data; name="file"; filename="model.wav"\r\n'
                         b"Content-Type: application/octet-stream\r\n\r\n" + content)
        else:
            field = draw(st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=10).filter(
                lambda f: f.lower() != "model"))
            parts.append(f'Content-Disposition: form-data; name="{field}"\r\n\r\n'.encode() + draw(field_values).encode())
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    assume(all(b"\r\n" + delimiter not in part for part in parts) and all(delimiter not in part for part in parts))
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                         f'multipart/form-data; boundary="{boundary}"']))
    if any(c in boundary for c in "'()+,/:=?") and '"' not in content_type:
        content_type = f'multipart/form-data; boundary="{boundary}"'  # tspecials must be quoted
    return content_type, body, expected


@fuzz(300)
@given(form=forms_naming_a_model())
def test_the_first_model_field_of_a_form_is_found(form: tuple[str, bytes, str | None]) -> None:
    content_type, body, expected = form
    if expected == "":
        try:
            model_from_body(content_type, body)
        except HTTPError as exc:
            assert exc.status == 400
            return
        raise AssertionError("an empty model field was accepted")
    assert model_from_body(content_type, body) == expected


@fuzz(200)
@given(value=st.text())
def test_model_from_query(value: str) -> None:
    try:
        assert model_from_query(MultiDict(model=value)) == value
    except HTTPError as exc:
        assert value == "" and exc.status == 400


# --------------------------------------------------------------------------- config loading

MODEL_KEYS = ["cmd", "cmdStop", "proxy", "env", "checkEndpoint", "ttl", "unloadTimeout", "aliases", "useModelName",
              "filters", "concurrencyLimit", "timeouts", "sendLoadingState", "unlisted", "name", "description",
              "metadata", "capabilities", "macros", "cmdd"]
TOP_KEYS = ["healthCheckTimeout", "healthCheckInterval", "logLevel", "logTimeFormat", "logToStdout", "startPort",
            "macros", "globalTTL", "unloadTimeout", "sendLoadingState", "includeAliasesInList", "hooks", "routing",
            "groups", "matrix", "metricsMaxInMemory", "ui", "apiKeys", "forwardApiKeys", "maxBodyMB", "upstream",
            "models", "bogus"]
config_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["echo ${PORT}", "${env.HOME}", "${nope}", "${", "${PORT}${PORT}", "x ${MODEL_ID} # c",
                     "http://127.0.0.1:${PORT}", "none", "a\\\n b", "'unclosed", "-1", "1e9"]),
)
config_values = st.recursive(
    st.one_of(json_values, config_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.one_of(st.sampled_from(MODEL_KEYS), config_text),
                                                                inner, max_size=4),
    max_leaves=10,
)
models = st.dictionaries(
    st.one_of(st.sampled_from(["alpha", "beta", "org/m", "no", "1"]), st.text(max_size=8)),
    st.one_of(st.dictionaries(st.sampled_from(MODEL_KEYS), config_values, max_size=5),
              st.fixed_dictionaries({"cmd": config_text}, optional={key: config_values for key in MODEL_KEYS[1:]}),
              config_values),
    max_size=3,
)
configs = st.dictionaries(st.sampled_from(TOP_KEYS), config_values, max_size=5).flatmap(
    lambda top: st.builds(lambda m: {**top, "models": m}, models) if "models" not in top else st.just(top))


def _loads_or_explains(text: str) -> None:
    try:
        load_config_text(text)
    except ConfigError as exc:
        assert str(exc).strip()


@fuzz(100)
@given(document=configs)
def test_any_config_structure_loads_or_is_explained(document: dict[str, Any]) -> None:
    """Any structure of known and unknown keys with values of any type: a Config, or a ConfigError."""
    _loads_or_explains(json.dumps(document, ensure_ascii=False))  # JSON is YAML


@fuzz(150)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      configs.map(lambda d: json.dumps(d)).flatmap(
                          lambda s: st.integers(0, len(s)).map(lambda i: s[:i]))))
def test_any_config_text_loads_or_is_explained(text: str) -> None:
    """Any text, YAML or not, cut anywhere: a Config, or a ConfigError."""
    _loads_or_explains(text)


# --------------------------------------------------------------------------- usage meter

counts = st.one_of(st.integers(0, 10**6), st.integers(-5, -1), st.floats(allow_nan=False), st.booleans(),
                   st.none(), st.text(max_size=4))
usage_blocks = st.fixed_dictionaries({}, optional={
    "prompt_tokens": counts, "completion_tokens": counts, "input_tokens": counts, "output_tokens": counts,
    "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": counts}),
})
timings_blocks = st.fixed_dictionaries({}, optional={
    "prompt_n": counts, "predicted_n": counts, "cache_n": counts, "prompt_per_second": counts,
    "predicted_per_second": counts, "draft_n": counts, "draft_n_accepted": counts,
})
metrics_blocks = st.fixed_dictionaries({}, optional={"time_to_first_token_ms": counts, "mean_itl_ms": counts})
events = st.fixed_dictionaries(
    {"choices": st.lists(st.fixed_dictionaries({"delta": st.fixed_dictionaries(
        {"content": st.sampled_from(['"usage"', "timings\n", "data: {}", "x"]) | st.text(max_size=8)})}), max_size=1)},
    optional={"usage": usage_blocks | json_values, "timings": timings_blocks | json_values,
              "metrics": metrics_blocks, "response": st.fixed_dictionaries({"usage": usage_blocks}),
              "message": st.fixed_dictionaries({"usage": usage_blocks})},
)
sse_lines = st.one_of(
    events.map(lambda e: b"data: " + orjson.dumps(e)),
    events.map(lambda e: b"data:" + orjson.dumps(e) + b"\r"),  # CRLF line ends, no space after the colon
    st.sampled_from([b"data: [DONE]", b"event: message", b": keep-alive", b"", b'data: {"usage": 5}',
                     b'data: {"usage": {"prompt_tokens": 3}', b"retry: 10", b'data: ["usage"]']),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)
sse_streams = st.tuples(st.lists(sse_lines, max_size=12), st.booleans()).map(
    lambda t: b"\n".join(t[0]) + (b"\n" if t[1] else b""))  # with or without a last newline


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def _meter(content_type: str, chunks: list[bytes], max_body: int | None = None) -> Any:
    meter = UsageMeter(content_type) if max_body is None else UsageMeter(content_type, max_body=max_body)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.result()


SSE = "text/event-stream"


@fuzz(200)
@given(data=st.one_of(sse_streams, st.binary(max_size=300)).flatmap(lambda d: st.tuples(st.just(d), split(d))))
def test_usage_of_a_stream_is_the_same_however_it_is_chunked(data: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = data
    whole = _meter(SSE, [stream])
    assert _meter(SSE, chunks) == whole
    assert _meter(SSE, [stream[i : i + 1] for i in range(len(stream))]) == whole


@fuzz(200)
@given(prompt=st.integers(0, 10**9), generated=st.integers(0, 10**9), noise=st.lists(sse_lines, max_size=4),
       cuts=st.lists(st.integers(0, 10**4), max_size=8))
def test_usage_in_a_stream_is_found(prompt: int, generated: int, noise: list[bytes], cuts: list[int]) -> None:
    """An OpenAI `usage` event after any other lines (noise without usage) is what is found."""
    noise = [line for line in noise if b"usage" not in line and b"timings" not in line and b"metrics" not in line]
    final = b"data: " + orjson.dumps({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": generated}})
    stream = b"\n".join([*noise, final, b"data: [DONE]"]) + b"\n"
    edges = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    usage = _meter("text/event-stream", [stream[a:b] for a, b in zip(edges, edges[1:])])
    assert usage is not None and (usage.prompt_tokens, usage.generated_tokens) == (prompt, generated)


@fuzz(300)
@given(data=st.one_of(events.map(orjson.dumps), st.lists(events).map(orjson.dumps), st.binary(max_size=200))
       .flatmap(lambda d: st.tuples(st.just(d), split(d))),
       max_body=st.sampled_from([None, 16, 64, 256]))
def test_usage_of_a_json_body_is_the_same_however_it_is_chunked(data: tuple[bytes, list[bytes]],
                                                                 max_body: int | None) -> None:
    """Also with a small size bound: a body over it is ignored whole, however it arrives."""
    body, chunks = data
    assert _meter("application/json", chunks, max_body) == _meter("application/json", [body], max_body)


# --------------------------------------------------------------------------- request targets

SAFE = string.ascii_letters + string.digits + "-_~"
safe_segments = st.text(alphabet=SAFE, min_size=1, max_size=10)


def _encode(text: str, depth: int) -> str:
    for _ in range(depth):
        text = "".join(f"%{ord(c):02X}" if c in "./\\%" else c for c in text)
    return text


# Raw control characters never reach the check: aiohttp's HTTP parser refuses them in the
# request line. Encoded ones (`%00`) do.
raw_paths = st.one_of(
    st.text(st.characters(exclude_categories=["Cc"])),
    st.text(alphabet="/.%25eEfF5cC\\01dDaA", max_size=40),
).map(lambda p: "/" + p)


@fuzz(300)
@given(path=raw_paths)
def test_target_check_never_raises(path: str) -> None:
    problem = target_problem(path)
    assert problem is None or problem.strip()
    if problem is None:  # what passes has no dot segment and no control character at any decoding depth
        seen = path.split("?", 1)[0]
        for _ in range(6):
            segments = seen.replace("\\", "/").split("/")
            assert "." not in segments and ".." not in segments, path
            assert not any(ord(c) < 0x20 or c == "\x7f" for c in seen), path
            seen = unquote(seen, errors="surrogateescape")


@fuzz(300)
@given(before=st.lists(safe_segments, max_size=3), after=st.lists(safe_segments, max_size=3),
       dots=st.sampled_from([".", ".."]), separator=st.sampled_from(["/", "\\"]),
       depths=st.lists(st.integers(0, 5), min_size=3, max_size=3), query=st.sampled_from(["", "?a=..", "?x"]))
def test_dot_segments_are_refused_at_any_encoding_depth(before: list[str], after: list[str], dots: str, separator: str,
                                                        depths: list[int], query: str) -> None:
    """`..` or `.` between separators, each character raw or encoded up to five times over."""
    encoded_dots = "".join(_encode(c, depth) for c, depth in zip(dots, depths))
    sep = _encode(separator, depths[-1])
    path = "/" + "/".join(before) + sep + encoded_dots + (sep + "/".join(after) if after else "") + query
    assert target_problem(path) is not None, path


@fuzz(200)
@given(segments=st.lists(safe_segments, max_size=6), query=st.text(max_size=20))
def test_plain_paths_pass(segments: list[str], query: str) -> None:
    assert target_problem("/" + "/".join(segments) + "?" + quote(query)) is None


# --------------------------------------------------------------------------- activity queries

ACTIVITY_KEYS = ["limit", "page", "min_id", "max_id", "start", "end", "sort", "order", "model"]
query_values = st.one_of(
    st.integers().map(str), st.text(max_size=12), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["9" * 19, "9" * 30, "9" * 5000, "١٢", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                     "id", "time", "ASC", "Desc", ""]),
)


@pytest.fixture(scope="module")
def store() -> ActivityStore:
    """An in-memory activity log with a few rows."""

    async def build() -> ActivityStore:
        store = ActivityStore(None, 100)
        for i in range(1, 4):
            store.add(ActivityRow(
                id=store.next_id(), timestamp=1.7e9 + i, model="alpha", method="POST", req_path="/v1/chat/completions",
                resp_status_code=200, resp_content_type="application/json", prompt_tokens=1, generated_tokens=2,
                cached_tokens=None, draft_tokens=None, accepted_tokens=None, prompt_per_second=3.0,
                generation_per_second=4.0, ttfb_ms=5.0, duration_ms=6.0, error_msg=None,
            ))
        store.flush()
        return store

    return asyncio.run(build())


@fuzz(400)
@given(params=st.lists(st.tuples(st.sampled_from(ACTIVITY_KEYS), query_values), max_size=8))
def test_activity_queries_answer_or_refuse_with_400(store: ActivityStore, params: list[tuple[str, str]]) -> None:
    """Any query string of the activity log is a page (however far out its numbers) or a 400."""
    try:
        query = parse_activity_query(MultiDict(params))
    except HTTPError as exc:
        assert exc.status == 400 and exc.message.strip()
        return
    json.dumps(store.query(query).to_json())
    json.dumps(store.stats(query.models))


# --------------------------------------------------------------------------- credentials

# Header values as aiohttp hands them over: UTF-8 decoded, undecodable bytes as surrogate escapes.
header_values = st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape"))
header_text = st.one_of(
    header_values,
    st.builds(lambda scheme, rest: f"{scheme} {rest}", st.sampled_from(["Basic", "Bearer", "basic", "BEARER", "Digest"]),
              st.one_of(header_values, st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()))),
)


@fuzz(300)
@given(authorization=st.none() | header_text, api_key=st.none() | header_values)
def test_presented_key_never_raises(authorization: str | None, api_key: str | None) -> None:
    headers = {name: value for name, value in (("Authorization", authorization), ("x-api-key", api_key)) if value is not None}
    found = presented_key(headers)
    assert found is None or (found[0] and found[1] in ("basic", "bearer", "x-api-key"))
