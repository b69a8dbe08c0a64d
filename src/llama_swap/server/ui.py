"""The web UI: static files shipped in the package (no build step), under /ui/."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_NO_CACHE = {"Cache-Control": "no-cache"}  # an upgraded package shows its new UI at once


async def to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def ui_file(request: web.Request) -> web.StreamResponse:
    """A file of the UI; any path without an extension is a page of the app (index.html)."""
    name = request.match_info["path"]
    if "." not in name.rsplit("/", 1)[-1]:
        name = "index.html"
    path = (UI_DIR / name).resolve()
    if not path.is_relative_to(UI_DIR) or not path.is_file():
        raise web.HTTPNotFound(reason=f"no UI file {name}")
    return web.FileResponse(path, headers=_NO_CACHE)


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"})


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/", to_ui)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/{path:.*}", ui_file)
