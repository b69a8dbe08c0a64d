"""`GET /api/profiles` and `PUT /api/profiles/active`: which profile's pins rewrite requested
model ids (at most one; none at start-up and after every reload)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from llama_swap.errors import HTTPError
from llama_swap.server.responses import json_response
from llama_swap.server.service import SERVICE, Service


def profiles_payload(service: Service) -> dict[str, Any]:
    """The profiles and the active one (its `pins`: requested id -> target, `""` disabled)."""
    profiles = service.config.profiles
    return {
        "active": service.names.active,
        "profiles": [{"id": name, "description": profiles[name].description, "pins": dict(profiles[name].pins)}
                     for name in sorted(profiles)],
    }


async def list_profiles(request: web.Request) -> web.Response:
    return json_response(profiles_payload(request.app[SERVICE]))


async def activate_profile(request: web.Request) -> web.Response:
    """Body `{"name": "<profile>"}`, or `{"name": null}` for none."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict) or "name" not in body or not (body["name"] is None or isinstance(body["name"], str)):
        raise HTTPError(400, 'expected a JSON body {"name": "<profile>"} or {"name": null}')
    name = body["name"] or None
    service = request.app[SERVICE]
    try:
        service.activate_profile(name)
    except KeyError:
        known = ", ".join(sorted(service.config.profiles)) or "none are configured"
        raise HTTPError(404, f"profile '{name}' not found (profiles: {known})") from None
    return json_response({"active": service.names.active})


def add_profile_routes(app: web.Application) -> None:
    app.router.add_get("/api/profiles", list_profiles)
    app.router.add_put("/api/profiles/active", activate_profile)
