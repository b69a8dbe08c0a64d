"""The API documentation routes: GET /openapi.json and the Swagger UI at /swagger/.

The OpenAPI document lives next to this module (``openapi.yaml``) and is loaded once.
The Swagger UI assets come from the ``swagger_ui_bundle`` package and are served
locally under ``/swagger/assets/``: no CDN, so the page works offline.

The bundled Swagger UI (4.x) only renders documents whose ``openapi`` field starts
with ``3.0.``; ``openapi.yaml`` is written in the subset of 3.1 that is also valid
3.0, and the page relabels the document for the viewer (``/openapi.json`` itself stays
3.1).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from ruamel.yaml import YAML
from swagger_ui_bundle import swagger_ui_path

from llama_swap.server.ui import package_file

__all__ = [
    "DOCS_ROUTE_NAMES",
    "add_docs_routes",
    "openapi_document",
    "openapi_paths",
    "swagger_html",
]

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Names of the routes add_docs_routes registers, so a route-table test can tell them
# apart (/swagger/ and /swagger/assets/... are not separate entries in the document).
DOCS_ROUTE_NAMES = frozenset({"openapi_json", "swagger", "swagger_page", "swagger_assets"})

_ASSETS_PREFIX = "/swagger/assets"


@functools.cache
def _load_document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc = YAML(typ="safe", pure=True).load(text)
    if not isinstance(doc, dict):  # pragma: no cover - guards a broken package build
        raise RuntimeError("openapi.yaml does not hold a mapping")
    return doc


def openapi_document(version: str) -> dict[str, Any]:
    """A fresh copy of the OpenAPI document with ``info.version`` set to *version*."""
    doc = copy.deepcopy(_load_document())
    doc["info"]["version"] = version
    return doc


def openapi_paths() -> set[tuple[str, str]]:
    """Every documented operation as ``(METHOD, path)``, e.g. ``("POST", "/v1/chat/completions")``.

    Paths use OpenAPI templates (``/upstream/{model}/{path}``, where ``{path}`` stands for
    the rest of the URL, slashes included). ``/swagger/`` and ``/swagger/assets/...`` are
    covered by the ``/swagger`` entry; see :data:`DOCS_ROUTE_NAMES`.
    """
    pairs: set[tuple[str, str]] = set()
    for path, item in _load_document()["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                pairs.add((method.upper(), path))
    return pairs


# Relative URLs throughout, so the page also works behind a reverse proxy that mounts
# llama-swap under a sub-path: the page is /swagger/, assets are ./assets/..., and the
# document is ../openapi.json.
_SWAGGER_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>llama-swap API</title>
  <link rel="stylesheet" type="text/css" href="./assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="./assets/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="./assets/favicon-16x16.png" sizes="16x16">
  <style>html { box-sizing: border-box; } body { margin: 0; background: #fafafa; }</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./assets/swagger-ui-bundle.js" charset="utf-8"></script>
  <script src="./assets/swagger-ui-standalone-preset.js" charset="utf-8"></script>
  <script>
    // Swagger UI 4 renders only "openapi: 3.0.n" documents. /openapi.json is OpenAPI 3.1
    // written in the subset that is also valid 3.0, so relabel it for the viewer.
    function relabelOpenApi31(res) {
      try {
        if (res && typeof res.text === "string" && /openapi\\.json(\\?|#|$)/.test(res.url || "")) {
          var doc = JSON.parse(res.text);
          if (typeof doc.openapi === "string" && doc.openapi.indexOf("3.1.") === 0) {
            doc.openapi = "3.0.3";
            res.text = JSON.stringify(doc);
            res.data = res.text;
            try { res.body = doc; res.obj = doc; } catch (e) { /* read-only in some builds */ }
          }
        }
      } catch (e) { /* not JSON: leave the response alone */ }
      return res;
    }
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: new URL("../openapi.json", window.location.href).toString(),
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [SwaggerUIBundle.plugins.DownloadUrl],
        layout: "StandaloneLayout",
        responseInterceptor: relabelOpenApi31
      });
    };
  </script>
</body>
</html>
"""


def swagger_html() -> str:
    """The Swagger UI page served at /swagger/."""
    return _SWAGGER_HTML


def _assets_dir() -> Path:
    path = Path(str(swagger_ui_path))
    if not (path / "swagger-ui-bundle.js").is_file():  # pragma: no cover - broken install
        raise RuntimeError(f"swagger_ui_bundle assets not found in {path}")
    return path


def add_docs_routes(app: web.Application, version: str) -> None:
    """Register GET /openapi.json, GET /swagger (redirect), GET /swagger/ and /swagger/assets/.

    The document is loaded and serialized once, here; requests only send bytes.
    """
    spec_body = orjson.dumps(openapi_document(version))
    page_body = _SWAGGER_HTML.encode("utf-8")

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(
            body=spec_body,
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def swagger_redirect(request: web.Request) -> web.StreamResponse:
        # Relative Location ("swagger/" from "/swagger" resolves to "/swagger/") so the
        # redirect stays correct under a reverse-proxy sub-path; keep the query string.
        location = "swagger/"
        if request.query_string:
            location += "?" + request.query_string
        raise web.HTTPMovedPermanently(location=location)

    async def swagger_page(request: web.Request) -> web.Response:
        return web.Response(
            body=page_body,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    app.router.add_get("/openapi.json", openapi_json, name="openapi_json")
    app.router.add_get("/swagger", swagger_redirect, name="swagger")
    app.router.add_get("/swagger/", swagger_page, name="swagger_page")
    assets = _assets_dir().resolve()

    async def swagger_asset(request: web.Request) -> web.StreamResponse:
        # Not `add_static`: it answers a missing file with an empty 404, and a name too long
        # for the file system with a 500.
        return web.FileResponse(package_file(assets, request.match_info["name"], "Swagger UI asset"))

    app.router.add_get(_ASSETS_PREFIX + "/{name:.+}", swagger_asset, name="swagger_assets")
