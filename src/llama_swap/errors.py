"""Every error the service itself produces: its exception and its body, in one place.

The API reference fixes the shape: ``{"error": "<message>"}`` with the HTTP status.
Errors produced by upstream servers are never rewritten; they pass through as sent.
"""

from __future__ import annotations

from typing import Mapping

import orjson


class HTTPError(Exception):
    """Raised anywhere in request handling; answered as a JSON error by the lane or the app."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def model_not_found(name: str) -> HTTPError:
    return HTTPError(404, f"model '{name}' not found in config")
