"""Find the model a request names: JSON body, multipart or urlencoded form, or ``?model=``."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any, NoReturn
from urllib.parse import parse_qs

import orjson
from multidict import MultiMapping

from llama_swap.errors import HTTPError

_FORM_MAX_FIELD = 4096  # a model name is short; never decode a file part as the name
_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)


def model_from_body(content_type: str, body: bytes) -> str | None:
    """The `model` field of a request body, or None when the body names none.

    A body that looks like JSON is read as JSON whatever its Content-Type, because
    `curl -d '{...}'` sends JSON labelled as a urlencoded form.
    """
    if not body:
        return None
    ctype = content_type.lower()
    if ctype.startswith("multipart/form-data"):
        return _model_from_multipart(content_type, body)
    stripped = body.lstrip()
    if "json" in ctype or stripped[:1] in (b"{", b"["):
        return _model_from_json(body)
    if ctype.startswith("application/x-www-form-urlencoded"):
        try:
            values = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("model")
        except UnicodeDecodeError as exc:
            raise HTTPError(400, f"form body is not valid UTF-8: {exc}") from exc
        return _check(values[0]) if values else None
    return None


def model_from_query(query: MultiMapping[str]) -> str | None:
    value = query.get("model")
    return _check(value) if value is not None else None


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (with a 'model' field): 400 otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, "request body must be a JSON object with a 'model' field")
    return data


def _model_from_json(body: bytes) -> str | None:
    data = json_object(body)
    if "model" not in data:
        return None
    value = data["model"]
    if not isinstance(value, str):
        raise HTTPError(400, f"'model' must be a string, got {type(value).__name__}")
    return _check(value)


def _model_from_multipart(content_type: str, body: bytes) -> str | None:
    """Scan the parts' headers with `bytes.find`; parse only the `model` part.

    Parsing the whole body with `email` costs about a second per 20 MB of audio, on the
    event loop, stalling every other request meanwhile.
    """
    delimiter = b"--" + _boundary(content_type)
    pos = body.find(delimiter)
    if pos < 0:
        _malformed()
    while not body.startswith(b"--", pos + len(delimiter)):  # `--boundary--` ends the body
        line_end = body.find(b"\r\n", pos)
        head_end = body.find(b"\r\n\r\n", line_end)
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if min(line_end, head_end, end) < 0:
            _malformed()
        headers = body[line_end + 2 : head_end + 4]
        if _PARSER.parsebytes(headers).get_param("name", header="content-disposition") == "model":
            return _form_field(headers, body[head_end + 4 : end])
        pos = end + 2
    return None


def _boundary(content_type: str) -> bytes:
    """The boundary as the bytes on the wire (aiohttp decodes headers as UTF-8, surrogateescape)."""
    raw = content_type.encode("utf-8", "surrogateescape")
    boundary = _PARSER.parsebytes(b"Content-Type: " + raw + b"\r\n\r\n").get_boundary()
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary")
    return boundary.encode("utf-8", "surrogateescape")


def _form_field(headers: bytes, value: bytes) -> str:
    if len(value) > _FORM_MAX_FIELD:
        raise HTTPError(400, "form field 'model' must be a short text value")
    payload = _PARSER.parsebytes(headers + value).get_payload(decode=True)  # honours a Content-Transfer-Encoding
    if not isinstance(payload, bytes):
        raise HTTPError(400, "form field 'model' must be a short text value")
    try:
        return _check(payload.decode("utf-8").strip())
    except UnicodeDecodeError as exc:
        raise HTTPError(400, "form field 'model' is not valid UTF-8") from exc


def _malformed() -> NoReturn:
    raise HTTPError(400, "malformed multipart/form-data body")


def _check(name: str) -> str:
    if not name:
        raise HTTPError(400, "'model' must not be empty")
    return name
