"""Every error the service itself produces: its exception and its body, in one place.

The API reference fixes the default shape: ``{"error": "<message>"}`` with the HTTP status.
`errorFormat: openai` switches every such body to the envelope the Go llama-swap and OpenAI
use, ``{"src": "llama-swap", "error": {"message", "type", "param", "code"}}``, so that
clients which show only ``error.message`` (openai-python 3.x, and what is built on it) show
the reason. Errors produced by upstream servers are never rewritten; they pass through as sent.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import orjson

ErrorFormat = Literal["simple", "openai"]

# status -> (type, code), as the Go version derives them
_KINDS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


class HTTPError(Exception):
    """Raised anywhere in request handling; answered as a JSON error by the lane or the app."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _Shape:
    """The configured shape (`errorFormat`), read by every lane: one setting for the process,
    set at start-up and on each reload."""

    openai = False


SHAPE = _Shape()


def use_error_format(name: ErrorFormat) -> None:
    SHAPE.openai = name == "openai"


def openai_error(status: int, message: str) -> dict[str, Any]:
    """The Go version's / OpenAI's error object for ``status``."""
    kind, code = _KINDS.get(status) or (
        ("server_error", "internal_error") if status >= 500 else ("invalid_request_error", "invalid_request"))
    return {"message": message, "type": kind, "param": None, "code": code}


def error_body(message: str, status: int) -> bytes:
    """The body of an error answer, in the configured shape."""
    if SHAPE.openai:
        return orjson.dumps({"src": "llama-swap", "error": openai_error(status, message)})
    return orjson.dumps({"error": message})


def stream_error(message: str, status: int) -> dict[str, Any]:
    """The payload of an SSE event ending a stream with an error: always an object with a
    `message` (the openai client raises it as `APIError` with that text), the Go envelope
    with `errorFormat: openai`."""
    if SHAPE.openai:
        return {"src": "llama-swap", "error": openai_error(status, message)}
    return {"error": {"message": message, "type": "server_error", "code": status}}


def model_not_found(name: str) -> HTTPError:
    return HTTPError(404, f"model '{name}' not found in config")
