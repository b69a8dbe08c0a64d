"""Find the model a request names: JSON body, multipart or urlencoded form, or ``?model=``."""

from __future__ import annotations

import email.parser
import email.policy
from urllib.parse import parse_qs

import orjson
from multidict import MultiMapping

from llama_swap.server.errors import HTTPError

_FORM_MAX_FIELD = 4096  # a model name is short; never decode a file part as the name


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


def _model_from_json(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, "request body must be a JSON object with a 'model' field")
    if "model" not in data:
        return None
    value = data["model"]
    if not isinstance(value, str):
        raise HTTPError(400, f"'model' must be a string, got {type(value).__name__}")
    return _check(value)


def _model_from_multipart(content_type: str, body: bytes) -> str | None:
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise HTTPError(400, "malformed multipart/form-data body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != "model":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or len(payload) > _FORM_MAX_FIELD:
            raise HTTPError(400, "form field 'model' must be a short text value")
        try:
            return _check(payload.decode("utf-8").strip())
        except UnicodeDecodeError as exc:
            raise HTTPError(400, "form field 'model' is not valid UTF-8") from exc
    return None


def _check(name: str) -> str:
    if not name:
        raise HTTPError(400, "'model' must not be empty")
    return name
