"""JSON answers of the aiohttp app (the management side), in the service's one error shape."""

from __future__ import annotations

from typing import Any, Mapping

import orjson
from aiohttp import web

from llama_swap.errors import error_body


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=error_body(message, status), status=status, headers=headers, content_type="application/json")


def cors_headers(request: web.Request) -> dict[str, str] | None:
    """`Access-Control-Allow-Origin` echoing the request's `Origin`: for answers that browser
    UIs on another origin read (the model listings, llama.cpp's router API)."""
    origin = request.headers.get("Origin")
    return {"Access-Control-Allow-Origin": origin} if origin else None
