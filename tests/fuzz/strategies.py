"""Hypothesis strategies shared by the fuzz tests: model names, JSON values and request
bodies (well-formed, malformed, deeply nested, of the wrong type), multipart forms."""

from __future__ import annotations

import json
import string
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json",
    "text/plain", "application/x-www-form-urlencoded", "application/octet-stream", "multipart/form-data",
    "multipart/form-data; boundary=", "text/event-stream", "json", ";;;", "application/json; charset=latin-1",
]

KNOWN_NAMES = ["alpha", "beta", "llama3", "nomic-embed", "beta-upstream", "ALPHA", "alpha ", " alpha"]

# Text that reaches the service as a model name: printable, control characters, NUL, any
# plane of unicode; long and very long.
names = st.one_of(
    st.sampled_from(KNOWN_NAMES),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", "\x00", "a\x00b", "../../etc/passwd", "alpha/../beta", "%2e%2e", "💥", "\r\n"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["m", "é", "\x00", "/"]), st.integers(1_000, 200_000)),
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
wrong_model_types = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
# Fields of the fake upstream that change its behaviour (`n_chunks`, `chunk_delay`) are left out:
# they would only make it slow.
FIELD_NAMES = ["messages", "prompt", "input", "stream", "stream_options", "max_tokens", "temperature",
               "top_p", "options", "documents", "query", "tools", "n", "content"]
extra_fields = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12)).filter(lambda k: k not in ("n_chunks", "chunk_delay")),
    json_values,
    max_size=5,
)


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """An object naming a model (a name, or a value of the wrong type) with other fields."""
    document = draw(extra_fields)
    model = draw(st.one_of(names, wrong_model_types))
    document = {"model": model, **document} if draw(st.booleans()) else {**document, "model": model}
    return _dumps(document)


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """Arrays or objects nested up to 12,000 deep, alone or under a valid request's field."""
    depth = draw(st.one_of(st.sampled_from([1023, 1024, 1025, 10_000]), st.integers(1, 12_000)))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    nested = opener * depth + b"1" + closer * depth
    if draw(st.booleans()):
        return nested
    name = draw(st.sampled_from(["alpha", "beta", "nobody"]))
    return b'{"model":"' + name.encode() + b'","messages":' + nested + b"}"


@st.composite
def malformed_json(draw: st.DrawFn) -> bytes:
    """A request that is almost JSON: cut short, a byte changed, odd escapes and numbers."""
    valid = draw(json_bodies())
    how = draw(st.sampled_from(["truncate", "flip", "insert", "literal"]))
    if how == "literal":
        return draw(st.sampled_from([
            b'{"model":"alpha","x":1e99999}', b'{"model":"alpha","x":123456789012345678901234567890}',
            b'{"model":"\\ud800"}', b'{"model":"\\u0000"}', b'{"model":"alpha","model":5}',
            b'{"model":"alpha",}', b"{'model':'alpha'}", b'{"model":alpha}', b'{"model":"alpha"', b"{",
            b"[", b"\xef\xbb\xbf{\"model\":\"alpha\"}", b'{"model":"\xff\xfe"}', b'{"model":NaN}',
            b'{"model":"alpha","messages":[' + b"1," * 50_000 + b"1]}", b"\x00{}", b'{"model":"alpha"}garbage',
        ]))
    if not valid:
        return b"{"
    index = draw(st.integers(0, len(valid) - 1))
    if how == "truncate":
        return valid[:index]
    if how == "flip":
        return valid[:index] + bytes([draw(st.integers(0, 255))]) + valid[index + 1 :]
    return valid[:index] + draw(st.binary(min_size=1, max_size=4)) + valid[index:]


top_level_non_objects = st.builds(_dumps, st.one_of(json_scalars, st.lists(json_values, max_size=4)))

bodies = st.one_of(
    json_bodies(), malformed_json(), deeply_nested(), top_level_non_objects,
    st.binary(max_size=200), st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda name: f"model={quote(name)}&x=1".encode("utf-8", "surrogatepass"), names),
)


BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"


@st.composite
def multipart_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A multipart form, well-formed or not, and the Content-Type it is sent with."""
    boundary = draw(st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=70))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["model", "model", "file", "prompt", "Model", "model\x00", ""]) | st.text(max_size=10))
        disposition = draw(st.sampled_from([
            f'form-data; name="{name}"', f"form-data; name={name}", f'form-data; name="{name}"; filename="a.wav"',
            f"form-data; name*=utf-8''{quote(name)}", 'form-data; name="model"; name="file"', "form-data",
            "attachment", "",
        ]))
        header_lines = [f"Content-Disposition: {disposition}"] if disposition else []
        header_lines += draw(st.lists(st.sampled_from([
            "Content-Type: text/plain; charset=utf-16", "Content-Transfer-Encoding: base64",
            "Content-Transfer-Encoding: quoted-printable", "Content-Type: application/octet-stream",
            "X-Odd: \x7f", "Content-Length: 99999",
        ]), max_size=2))
        value = draw(st.one_of(names.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=300)))
        parts.append("\r\n".join(header_lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + value)
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + newline + part + newline for part in parts)
    body += draw(st.sampled_from([delimiter + b"--" + newline, delimiter + b"--", b"", delimiter]))
    body = draw(st.sampled_from([b"", b"preamble\r\n", b"\xff\xfe"])) + body + draw(st.sampled_from([b"", b"epilogue"]))
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=400))  # binary garbage under a multipart label
    shown = draw(st.sampled_from([
        f"multipart/form-data; boundary={boundary}", f'multipart/form-data; boundary="{boundary}"',
        "multipart/form-data", "multipart/form-data; boundary=", 'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=other", f"multipart/form-data; boundary={boundary}; boundary=x",
        f"Multipart/Form-Data; BOUNDARY={boundary}", f"multipart/form-data; boundary*=utf-8''{quote(boundary)}",
        f"multipart/mixed; boundary={boundary}", f"multipart/form-data; boundary={boundary}\udcff",
    ]))
    return shown, body
