"""What llama.cpp's router clients ask of the paths they share with a model's own server:
`GET /props` naming no model, and the `autoload` query parameter. Pure decisions; the lane
(`server/lane.py`) carries them out.

llama-server in router mode answers `GET /props` without a model itself, with
`role: "router"` — how its web UI tells a router from a single model (it asks
`/props?autoload=false`, then lists `/v1/models` and asks `/props?model=<id>` of each loaded
one). Our rule keeps what `GET /props` did before wherever it answered: the router's props
when the query has `autoload` (only router clients send it) or when not exactly one model
is running (which was a 400); otherwise the one running model's props, as before.
"""

from __future__ import annotations

from typing import Any

from multidict import MultiMapping

ROLE = "router"


def router_props(version: str) -> dict[str, Any]:
    """llama-server's router `/props`, with our values: no instance limit (`0`, as its
    `--models-max 0`), models start on demand; `model_path: "none"` and the empty
    generation settings are what llama-server sends so that its web UI does not break."""
    return {
        "role": ROLE,
        "max_instances": 0,
        "models_autoload": True,
        "model_alias": "llama-swap",
        "model_path": "none",
        "default_generation_settings": {"params": None, "n_ctx": 0},
        "ui_settings": {},
        "build_info": f"llama-swap {version}",
        "cors_proxy_enabled": False,
    }


def wants_router_props(query: MultiMapping[str] | None, running: int) -> bool:
    """Whether a `GET /props` naming no model gets the router's props (the rule above)."""
    return (query is not None and "autoload" in query) or running != 1


def autoload_refused(query: MultiMapping[str] | None) -> bool:
    """`?autoload=` set to anything but `true` or `1`: the request must not start its model
    (llama-server's router answers 400 "model is not loaded" then)."""
    if query is None:
        return False
    value = query.get("autoload", "")
    return value != "" and value not in ("true", "1")
