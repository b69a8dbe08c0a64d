"""Every error body the service itself produces, in one place.

The API reference fixes the shape: ``{"error": "<message>"}`` with the HTTP status.
Errors produced by upstream servers are never rewritten; they pass through as sent.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson
from aiohttp import web


class HTTPError(Exception):
    """Raised anywhere in request handling; turned into a JSON error by the app."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=error_body(message), status=status, headers=headers, content_type="application/json")


def model_not_found(name: str) -> HTTPError:
    return HTTPError(404, f"model '{name}' not found in config")
