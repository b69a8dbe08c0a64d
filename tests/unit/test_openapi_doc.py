"""The OpenAPI document (src/llama_swap/server/openapi.yaml) and the docs routes."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llama_swap.server import docs

# ---------------------------------------------------------------------------
# The endpoint inventory the document must describe (the API contract).
# ---------------------------------------------------------------------------

MODEL_BODY_POSTS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/reranking",
    "/rerank",
    "/reranking",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/infill",
    "/completion",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
]
MULTIPART_POSTS = {
    "/v1/audio/transcriptions": "file",
    "/v1/images/edits": "image",
}
INFERENCE_POSTS = MODEL_BODY_POSTS + list(MULTIPART_POSTS)
STREAMING_POSTS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/completion",
    "/infill",
]
MODEL_QUERY_GETS = ["/v1/audio/voices", "/sdapi/v1/loras"]
PASSTHROUGH_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

EXPECTED_OPERATIONS = (
    {("POST", p) for p in INFERENCE_POSTS}
    | {("GET", p) for p in MODEL_QUERY_GETS}
    | {("GET", "/props"), ("GET", "/v1/models/{model}"), ("POST", "/models/load"), ("POST", "/models/unload")}
    | {(m, "/upstream/{model}/{path}") for m in PASSTHROUGH_METHODS}
    | {
        ("GET", "/slots"),
        ("GET", "/v1/models"),
        ("GET", "/models"),
        ("GET", "/health"),
        ("GET", "/running"),
        ("DELETE", "/upstream/{model}"),
        ("GET", "/upstream/{model}/load"),
        ("GET", "/unload"),
        ("POST", "/api/models/unload"),
        ("GET", "/metrics"),
        ("GET", "/logs"),
        ("GET", "/logs/stream"),
        ("GET", "/logs/stream/{source}"),
        ("GET", "/swagger"),
        ("GET", "/openapi.json"),
        ("GET", "/api/models"),
        ("POST", "/api/models/unload/{model}"),
        ("GET", "/api/events"),
        ("GET", "/api/metrics/activity"),
        ("GET", "/api/metrics/stats"),
        ("GET", "/api/captures/{id}"),
        ("GET", "/api/inflight"),
        ("POST", "/api/inflight/{id}/cancel"),
        ("GET", "/api/profiles"),
        ("PUT", "/api/profiles/active"),
        ("GET", "/api/version"),
        ("POST", "/api/chat"),
        ("POST", "/api/generate"),
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
        ("GET", "/api/tags"),
        ("GET", "/api/ps"),
        ("POST", "/api/show"),
        ("GET", "/api/performance"),
        ("GET", "/api/hardware"),
        ("GET", "/ui"),
        ("GET", "/ui/{path}"),
        ("GET", "/wol-health"),
        ("GET", "/favicon.ico"),
    }
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return docs.openapi_document("9.9.9-test")


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local $ref chain."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def inline_refs(doc: dict[str, Any], node: Any) -> Any:
    """A copy of *node* with every local $ref replaced by its target (no cycles here)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return inline_refs(doc, resolve(doc, node))
        return {k: inline_refs(doc, v) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_refs(doc, v) for v in node]
    return node


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method.lower()]


def response(doc: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    return resolve(doc, operation(doc, method, path)["responses"][status])


def all_parameters(doc: dict[str, Any], method: str, path: str) -> list[dict[str, Any]]:
    item = doc["paths"][path]
    params = item.get("parameters", []) + operation(doc, method, path).get("parameters", [])
    return [resolve(doc, p) for p in params]


def example_values(media: dict[str, Any], doc: dict[str, Any]) -> list[Any]:
    values = []
    if "example" in media:
        values.append(media["example"])
    for ex in media.get("examples", {}).values():
        values.append(resolve(doc, ex)["value"])
    return values


# ---------------------------------------------------------------------------
# Validity
# ---------------------------------------------------------------------------


def test_document_is_valid_openapi_31(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] == "llama-swap"
    assert doc["info"]["version"] == "9.9.9-test"
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc, cls=validator.OpenAPIV31SpecValidator)


def test_document_is_also_valid_openapi_30(doc: dict[str, Any]) -> None:
    """The /swagger/ page relabels the document as 3.0.3 for Swagger UI 4: keep that honest."""
    validator = pytest.importorskip("openapi_spec_validator")
    relabelled = copy.deepcopy(doc)
    relabelled["openapi"] = "3.0.3"
    validator.validate(relabelled, cls=validator.OpenAPIV30SpecValidator)


def test_document_structure(doc: dict[str, Any]) -> None:
    """Checks that hold even without openapi-spec-validator."""
    assert set(doc) >= {"openapi", "info", "paths", "components"}
    for key in ("schemas", "responses", "parameters"):
        assert doc["components"][key]
    op_ids: list[str] = []
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        for method in docs.HTTP_METHODS:
            if method in item:
                op = item[method]
                op_ids.append(op["operationId"])
                assert op["responses"], (method, path)
                assert all(isinstance(code, str) for code in op["responses"]), (method, path)
                # every path template has a matching path parameter
                names = {p["name"] for p in all_parameters(doc, method, path) if p["in"] == "path"}
                assert names == set(re.findall(r"{([^}]+)}", path)), (method, path)
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"

    # every local $ref resolves
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(doc, node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)


def test_document_serializes_to_plain_json(doc: dict[str, Any]) -> None:
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_examples_match_their_schemas(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    checked = 0
    for path, item in doc["paths"].items():
        for method in docs.HTTP_METHODS:
            if method not in item:
                continue
            op = item[method]
            contents = []
            if "requestBody" in op:
                contents.append(resolve(doc, op["requestBody"]).get("content", {}))
            for resp in op["responses"].values():
                contents.append(resolve(doc, resp).get("content", {}))
            for content in contents:
                for mtype, media in content.items():
                    if "json" not in mtype or "schema" not in media:
                        continue
                    schema = inline_refs(doc, media["schema"])
                    for value in example_values(media, doc):
                        jsonschema.validate(value, schema)
                        checked += 1
    assert checked >= 25


# ---------------------------------------------------------------------------
# Coverage of the endpoint inventory
# ---------------------------------------------------------------------------


def test_every_endpoint_is_documented() -> None:
    documented = docs.openapi_paths()
    missing = EXPECTED_OPERATIONS - documented
    assert not missing, f"undocumented: {sorted(missing)}"
    assert documented == EXPECTED_OPERATIONS, f"unexpected: {sorted(documented - EXPECTED_OPERATIONS)}"


@pytest.mark.parametrize("path", INFERENCE_POSTS)
def test_inference_endpoint_shape(doc: dict[str, Any], path: str) -> None:
    op = operation(doc, "POST", path)
    body = resolve(doc, op["requestBody"])
    assert body["required"] is True
    media_type = "multipart/form-data" if path in MULTIPART_POSTS else "application/json"
    schema = inline_refs(doc, body["content"][media_type]["schema"])
    flat = _flatten(schema)
    assert "model" in flat["required"]
    assert flat["properties"]["model"]["type"] == "string"
    if path in MULTIPART_POSTS:
        upload = flat["properties"][MULTIPART_POSTS[path]]
        assert upload == {**upload, "type": "string", "format": "binary"}
    assert {"200", "400", "404", "429", "502", "503"} <= set(op["responses"])
    for status in ("400", "404", "429", "502", "503"):
        content = response(doc, "POST", path, status)["content"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize("path", STREAMING_POSTS)
def test_streaming_endpoints_document_sse(doc: dict[str, Any], path: str) -> None:
    assert "text/event-stream" in response(doc, "POST", path, "200")["content"]
    body = resolve(doc, operation(doc, "POST", path)["requestBody"])
    schema = _flatten(inline_refs(doc, body["content"]["application/json"]["schema"]))
    assert schema["properties"]["stream"]["type"] == "boolean"


@pytest.mark.parametrize("path", MODEL_QUERY_GETS)
def test_model_query_endpoints(doc: dict[str, Any], path: str) -> None:
    (param,) = all_parameters(doc, "GET", path)
    assert (param["name"], param["in"], param["required"]) == ("model", "query", True)
    assert {"200", "400", "404", "429", "502", "503"} <= set(operation(doc, "GET", path)["responses"])


def test_slots_model_query_is_optional(doc: dict[str, Any]) -> None:
    (param,) = all_parameters(doc, "GET", "/slots")
    assert (param["name"], param["in"], param.get("required", False)) == ("model", "query", False)
    assert {"200", "400", "404", "502", "503"} <= set(operation(doc, "GET", "/slots")["responses"])


def test_props_model_is_optional_and_autoload_documented(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in all_parameters(doc, "GET", "/props")}
    assert set(params) == {"model", "autoload"} and not params["model"].get("required", False)
    assert {"200", "400", "404", "429", "502", "503"} <= set(operation(doc, "GET", "/props")["responses"])
    assert _json_examples(doc, "GET", "/props", "200")[0]["role"] == "router"


def test_router_load_and_unload_shapes(doc: dict[str, Any]) -> None:
    for path in ("/models/load", "/models/unload"):
        assert _json_examples(doc, "POST", path, "200") == [{"success": True}]
        assert {"400", "404"} <= set(operation(doc, "POST", path)["responses"])
    status = doc["components"]["schemas"]["RouterStatus"]
    assert status["properties"]["value"]["enum"] == ["unloaded", "loading", "loaded"]


def test_error_schema_and_examples(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["type"] == "string"
    not_found = doc["components"]["responses"]["ModelNotFound"]["content"]["application/json"]
    assert {"error": "model 'foo' not found in config"} in example_values(not_found, doc)
    assert {"error": "model 'nonexistent' not found in config"} in example_values(not_found, doc)
    unavailable = doc["components"]["responses"]["ServiceUnavailable"]["content"]["application/json"]
    assert {"error": "upstream health check timed out after 30s"} in example_values(unavailable, doc)
    assert "Retry-After" in doc["components"]["responses"]["TooManyRequests"]["headers"]


def _json_examples(doc: dict[str, Any], method: str, path: str, status: str) -> list[Any]:
    media = response(doc, method, path, status)["content"]["application/json"]
    return example_values(media, doc)


def _flatten(schema: dict[str, Any]) -> dict[str, Any]:
    """Merge an allOf schema into one {properties, required} view."""
    props: dict[str, Any] = dict(schema.get("properties", {}))
    required: list[str] = list(schema.get("required", []))
    for part in schema.get("allOf", []):
        sub = _flatten(part)
        props.update(sub["properties"])
        required += sub["required"]
    return {"properties": props, "required": required}


def test_models_listing(doc: dict[str, Any]) -> None:
    for path in ("/v1/models", "/models"):
        body = _json_examples(doc, "GET", path, "200")[0]
        assert body["object"] == "list"
        assert body["data"][0] == {"id": "llama3", "object": "model", "created": 1714000000, "owned_by": "llama-swap"}
    model = doc["components"]["schemas"]["Model"]
    assert set(model["required"]) == {"id", "object", "created", "owned_by"}
    assert {"name", "description"} <= set(model["properties"])
    assert model["properties"]["owned_by"]["enum"] == ["llama-swap"]


def test_management_shapes(doc: dict[str, Any]) -> None:
    health = _json_examples(doc, "GET", "/health", "200")
    assert {"status": "ok", "models": {}} in health
    assert {"status": "ok", "models": {"llama3": {"status": "running", "pid": 12345}, "nomic-embed": {"status": "running", "pid": 12346}}} in health
    states = doc["components"]["schemas"]["ModelHealth"]["properties"]["status"]["enum"]
    assert set(states) == {"running", "starting", "stopping", "failed"}

    assert {"running": ["llama3", "nomic-embed"]} in _json_examples(doc, "GET", "/running", "200")
    assert {"running": []} in _json_examples(doc, "GET", "/running", "200")

    unload_one = _json_examples(doc, "DELETE", "/upstream/{model}", "200")
    assert {"status": "ok", "message": "llama3 stopped"} in unload_one
    assert {"status": "error", "message": "llama3 is not running"} in unload_one
    assert "404" in operation(doc, "DELETE", "/upstream/{model}")["responses"]

    assert _json_examples(doc, "GET", "/upstream/{model}/load", "200") == [{"status": "ok", "message": "llama3 is ready"}]
    failed = _json_examples(doc, "GET", "/upstream/{model}/load", "503")
    assert {"error": "upstream health check timed out after 30s"} in failed
    assert "404" in operation(doc, "GET", "/upstream/{model}/load")["responses"]

    assert _json_examples(doc, "GET", "/unload", "200") == [{"status": "ok", "message": "all models unloaded"}]
    assert _json_examples(doc, "POST", "/api/models/unload", "200") == [{"msg": "ok"}]

    metrics = response(doc, "GET", "/metrics", "200")["content"]
    assert all(m.startswith("text/plain") for m in metrics)


# ---------------------------------------------------------------------------
# The routes
# ---------------------------------------------------------------------------


@pytest.fixture
async def client():
    app = web.Application()
    docs.add_docs_routes(app, "1.2.3")
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


class _AssetRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


async def test_openapi_json_route(client: TestClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = orjson.loads(await resp.read())
    assert body["info"]["version"] == "1.2.3"
    assert body["info"]["title"] == "llama-swap"
    assert body["openapi"].startswith("3.1.")
    assert body["paths"].keys() == docs.openapi_document("x")["paths"].keys()


async def test_swagger_redirects_to_trailing_slash(client: TestClient) -> None:
    resp = await client.get("/swagger", allow_redirects=False)
    assert resp.status in (301, 302, 307, 308)
    assert str(client.make_url("/swagger").join(yarl.URL(resp.headers["Location"]))).endswith("/swagger/")
    resp = await client.get("/swagger")  # follows the redirect
    assert resp.status == 200
    assert resp.url.path == "/swagger/"


async def test_swagger_page_uses_only_local_assets(client: TestClient) -> None:
    resp = await client.get("/swagger/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert "SwaggerUIBundle" in html
    assert "openapi.json" in html
    # no absolute URLs to any host (offline use)
    assert not re.search(r"(?i)\b(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), "page references a remote host"
    assert "cdn" not in html.lower()

    parser = _AssetRefs()
    parser.feed(html)
    refs = parser.refs
    expected = {
        "./assets/swagger-ui.css": "text/css",
        "./assets/swagger-ui-bundle.js": "javascript",
        "./assets/swagger-ui-standalone-preset.js": "javascript",
    }
    assert set(expected) <= set(refs)
    base = resp.url
    for ref in refs:
        url = base.join(yarl.URL(ref))
        assert url.host == base.host and url.port == base.port, ref
        asset = await client.get(url.path)
        assert asset.status == 200, ref
        body = await asset.read()
        assert body, ref
        if ref in expected:
            assert expected[ref] in asset.content_type, (ref, asset.content_type)
        elif ref.endswith(".png"):
            assert asset.content_type == "image/png"


async def test_swagger_page_points_at_the_document(client: TestClient) -> None:
    html = await (await client.get("/swagger/")).text()
    # the spec URL is resolved relative to /swagger/ -> /openapi.json
    assert '"../openapi.json"' in html
    resp = await client.get(client.make_url("/swagger/").join(yarl.URL("../openapi.json")).path)
    assert resp.status == 200
    assert (await resp.json())["info"]["version"] == "1.2.3"


async def test_unknown_asset_is_404(client: TestClient) -> None:
    resp = await client.get("/swagger/assets/does-not-exist.js")
    assert resp.status == 404
    resp = await client.get("/swagger/assets/../../etc/passwd")
    assert resp.status in (400, 403, 404)


def test_docs_routes_are_named() -> None:
    app = web.Application()
    docs.add_docs_routes(app, "0")
    names = {r.name for r in app.router.routes() if r.name}
    assert names == docs.DOCS_ROUTE_NAMES
