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
    return web.FileResponse(package_file(UI_DIR, name, "UI file"), headers=_NO_CACHE)


def package_file(directory: Path, name: str, what: str) -> Path:
    """The file ``name`` under ``directory`` (resolved), or a 404 (a JSON error, unlike the
    empty one of aiohttp's static routes) — also for names the file system refuses."""
    path = (directory / name).resolve()
    try:
        found = path.is_relative_to(directory) and path.is_file()
    except OSError:  # e.g. a name longer than the file system allows (a 500 otherwise)
        found = False
    if not found:
        raise web.HTTPNotFound(reason=f"no {what} {name}")
    return path


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"})


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/", to_ui)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/{path:.*}", ui_file)
