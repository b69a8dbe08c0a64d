"""`GET /v1/models/{id}` with the openai client, and llama.cpp's router API driven the way its
clients drive it: llama.cpp's web UI (tools/server/webui: `/props?autoload=false` to detect
router mode, `/v1/models` for the picker and its `status.value`, `POST /models/load` then
polling the listing, `/props?model=<id>&autoload=false` for a loaded model's modalities,
`POST /models/unload`) and pi-llama (`<base>/models` with `status.value`,
`architecture.input_modalities`, `meta.n_ctx`; then `/props?model=<id>&autoload=true` for
`default_generation_settings.n_ctx` and `chat_template`)."""

from __future__ import annotations

import textwrap
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until

CONFIG = f"""
    groups:
      pair:  # chat and org/model may run together
        swap: false
        members: [chat, org/model]
    models:
      chat:
        cmd: {fake_cmd(name="chat")}
        aliases: [talk]
        capabilities: {{in: [text, image], out: [text], context: 4096}}
      org/model:
        cmd: {fake_cmd(name="org-model")}
      slow:
        cmd: {fake_cmd(name="slow", healthy_after=2)}
      broken:
        cmd: {fake_cmd(name="broken", crash_at_start=True)}
      hidden:
        cmd: {fake_cmd(name="hidden")}
        unlisted: true
      keyed:
        cmd: llama-server --port ${{PORT}} --api-key hunter2 --hf-token=hf_secret -m /models/k.gguf
    """
PI_STATUS_VALUES = {"unloaded", "loading", "loaded", "sleeping", "unknown"}  # pi-llama's schema


@pytest.fixture
def service(start_service) -> RunningService:
    return start_service(CONFIG)


def listing(service: RunningService, path: str = "/v1/models") -> dict[str, dict[str, Any]]:
    response = service.http.get(path)
    assert response.status_code == 200, response.text
    return {record["id"]: record for record in response.json()["data"]}


def status(service: RunningService, model: str) -> str:
    return listing(service)[model]["status"]["value"]


def load(service: RunningService, model: str) -> httpx.Response:
    return service.http.post("/models/load", json={"model": model})


# ------------------------------------------------------------------ GET /v1/models/{id}


def test_openai_client_retrieves_models_ids_with_a_slash_and_aliases(service: RunningService) -> None:
    client = service.openai()
    chat = client.models.retrieve("chat")
    assert (chat.id, chat.object, chat.owned_by) == ("chat", "model", "llama-swap")
    assert isinstance(chat.created, int)
    assert listing(service)["chat"] == chat.model_dump(exclude_unset=True)  # the same record as the listing's
    assert client.models.retrieve("org/model").id == "org/model"  # sent as org%2Fmodel
    assert service.http.get("/v1/models/org/model").json()["id"] == "org/model"  # and as is
    alias = client.models.retrieve("talk")  # not listed (includeAliasesInList is off), yet retrievable
    assert alias.id == "talk" and alias.model_dump()["meta"]["llamaswap"] == {"type": "alias", "modelID": "chat"}


@pytest.mark.parametrize("name", ["nope", "hidden", "org/nope"])
def test_retrieving_an_unknown_or_unlisted_model_is_a_404(service: RunningService, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        service.openai().models.retrieve(name)
    assert caught.value.status_code == 404
    assert caught.value.response.json() == {"error": f"model '{name}' not found in config"}


def test_retrieve_404_in_the_openai_shape_with_error_format_openai(start_service) -> None:
    service = start_service("errorFormat: openai\n" + textwrap.dedent(CONFIG))
    with pytest.raises(openai.NotFoundError) as caught:
        service.openai().models.retrieve("nope")
    assert caught.value.message == "Error code: 404 - model 'nope' not found in config"


# ------------------------------------------------------------------ listings


def test_both_listings_carry_llama_cpp_router_status_and_args(service: RunningService) -> None:
    assert load(service, "chat").json() == {"success": True}
    v1, bare = listing(service), listing(service, "/models")
    for records in (v1, bare):
        for record in records.values():
            record.pop("created")
    assert v1 == bare
    assert set(v1) == {"chat", "org/model", "slow", "broken", "keyed"}  # hidden stays unlisted
    assert {model: record["status"]["value"] for model, record in v1.items()} == {
        "chat": "loaded", "org/model": "unloaded", "slow": "unloaded", "broken": "unloaded", "keyed": "unloaded"}
    assert v1["chat"]["status"]["args"][-4:] == ["--port", v1["chat"]["status"]["args"][-3], "--name", "chat"]
    # secrets in a command never reach the listing
    assert v1["keyed"]["status"]["args"] == [
        "llama-server", "--port", v1["keyed"]["status"]["args"][2], "--api-key", "[REDACTED]",
        "--hf-token=[REDACTED]", "-m", "/models/k.gguf"]
    # the API reference's fields hold exactly
    assert {(r["object"], r["owned_by"]) for r in v1.values()} == {("model", "llama-swap")}


def test_a_failed_start_is_unloaded_with_failed_and_why(service: RunningService) -> None:
    answer = load(service, "broken")
    assert answer.status_code == 503 and "broken" in answer.json()["error"]
    broken = listing(service)["broken"]["status"]
    assert broken["value"] == "unloaded" and broken["failed"] is True and broken["error"]


# ------------------------------------------------------------------ llama.cpp's web UI


def test_llama_cpp_web_ui_sequence(service: RunningService) -> None:
    """The requests the web UI's server and models stores make, in their order, and the
    fields they read."""
    http = service.http
    # 1. router detection: /props?autoload=false -> role
    props = http.get("/props", params={"autoload": "false"}).json()
    assert props["role"] == "router"
    assert props["default_generation_settings"]["n_ctx"] == 0 and props["model_path"] == "none"
    # 2. the picker: /v1/models, ids and status.value
    assert {model: record["status"]["value"] for model, record in listing(service).items()}["chat"] == "unloaded"
    # 3. load: POST /models/load, then poll /v1/models until "loaded"
    assert load(service, "chat").json() == {"success": True}
    assert wait_until(lambda: status(service, "chat") == "loaded", timeout=15)
    # 4. the loaded model's props, without loading anything: modalities, n_ctx
    model_props = http.get("/props", params={"model": "chat", "autoload": "false"})
    assert model_props.status_code == 200, model_props.text
    assert model_props.json()["modalities"] == {"vision": False, "audio": False}
    assert model_props.json()["default_generation_settings"]["n_ctx"] == 4096
    # ... and router detection still says router with one model running
    assert http.get("/props", params={"autoload": "false"}).json()["role"] == "router"
    # 5. chat with the selected model
    reply = service.openai().chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    # 6. unload: POST /models/unload, then the listing says "unloaded"
    assert http.post("/models/unload", json={"model": "chat"}).json() == {"success": True}
    assert status(service, "chat") == "unloaded"


def test_a_load_shows_loading_until_ready(service: RunningService) -> None:
    outcome: dict[str, httpx.Response] = {}
    loader = threading.Thread(target=lambda: outcome.setdefault("answer", load(service, "slow")))
    loader.start()
    try:
        assert wait_until(lambda: status(service, "slow") == "loading", timeout=10)
    finally:
        loader.join(timeout=30)
    assert outcome["answer"].json() == {"success": True}
    assert status(service, "slow") == "loaded"  # the answer came once it was ready


def test_autoload_false_does_not_start_a_model(service: RunningService) -> None:
    answer = service.http.get("/props", params={"model": "org/model", "autoload": "false"})
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "model 'org/model' is not loaded, and the request's autoload parameter says not to load it"}
    assert status(service, "org/model") == "unloaded"
    assert service.http.get("/running").json() == {"running": []}


@pytest.mark.parametrize(
    ("path", "body", "code", "error"),
    [
        ("/models/load", {"model": "nope"}, 404, "model 'nope' not found in config"),
        ("/models/unload", {"model": "nope"}, 404, "model 'nope' not found in config"),
        ("/models/unload", {"model": "chat"}, 400, "model 'chat' is not running"),
        ("/models/load", {}, 400, "missing 'model' field in request body"),
        ("/models/load", {"model": 3}, 400, "'model' must be a non-empty string"),
        ("/models/load", ["chat"], 400, 'expected a JSON body {"model": "<id or alias>"}'),
        ("/models/load", {"model": "chat", "extra_args": ["-c", "8"]}, 400,
         "extra_args is not supported: a model's arguments are its cmd in the config"),
    ],
)
def test_load_and_unload_refusals(service: RunningService, path: str, body: Any, code: int, error: str) -> None:
    answer = service.http.post(path, json=body)
    assert (answer.status_code, answer.json()) == (code, {"error": error})


def test_loading_a_running_model_is_refused_and_an_alias_names_its_model(service: RunningService) -> None:
    assert load(service, "talk").json() == {"success": True}  # an alias
    again = load(service, "chat")
    assert (again.status_code, again.json()) == (400, {"error": "model 'chat' is already running"})
    assert service.http.post("/models/unload", json={"model": "talk"}).json() == {"success": True}
    assert service.http.get("/running").json() == {"running": []}


def test_a_body_that_is_not_json_is_a_400(service: RunningService) -> None:
    answer = service.http.post("/models/load", content=b"{not json")
    assert answer.status_code == 400 and answer.json()["error"].startswith("invalid JSON body:")


# ------------------------------------------------------------------ pi-llama


def test_pi_llama_discovery_and_props(service: RunningService) -> None:
    base = f"{service.url}/v1"  # pi-llama's LLAMA_BASE_URL
    payload = httpx.get(f"{base}/models").json()
    for record in payload["data"]:  # what pi-llama's schema checks
        assert isinstance(record["id"], str)
        assert record["status"]["value"] in PI_STATUS_VALUES
        assert all(isinstance(m, str) for m in record.get("architecture", {}).get("input_modalities", []))
        assert isinstance(record.get("meta", {}).get("n_ctx", 0), (int, float))
    chat = next(record for record in payload["data"] if record["id"] == "chat")
    assert chat["architecture"]["input_modalities"] == ["text", "image"] and chat["meta"]["n_ctx"] == 4096
    # on model select: /props?model=<id>&autoload=true (starts it)
    props = httpx.get(f"{base.removesuffix('/v1')}/props?model=org%2Fmodel&autoload=true", timeout=30)
    assert props.status_code == 200, props.text
    assert props.json()["default_generation_settings"]["n_ctx"] == 4096
    assert isinstance(props.json()["chat_template"], str)
    assert status(service, "org/model") == "loaded"


# ------------------------------------------------------------------ GET /props naming no model


def test_props_without_a_model(service: RunningService) -> None:
    http = service.http
    assert http.get("/props").json()["role"] == "router"  # none running (was a 400)
    load(service, "chat")
    one = http.get("/props").json()
    assert "role" not in one and one["model_path"] == "/models/chat.gguf"  # the one running model, as before
    assert http.get("/props?autoload=true").json()["role"] == "router"  # a router client
    load(service, "org/model")
    assert http.get("/props").json()["role"] == "router"  # two running (was a 400)
    assert http.get("/slots").status_code == 400  # other model-less GETs keep their rule


def test_a_web_ui_on_another_origin_can_read_the_router_api(service: RunningService) -> None:
    """llama.cpp's web UI served elsewhere: its preflight, then the answers it reads."""
    origin = {"Origin": "http://127.0.0.1:9"}
    preflight = service.http.options("/models/load", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Headers"] == "content-type"
    answers = [
        service.http.get("/props", params={"autoload": "false"}, headers=origin),
        service.http.get("/v1/models", headers=origin),
        service.http.post("/models/load", json={"model": "chat"}, headers=origin),
        service.http.get("/v1/models/chat", headers=origin),
        service.http.post("/models/unload", json={"model": "chat"}, headers=origin),
    ]
    assert [(a.status_code, a.headers.get("Access-Control-Allow-Origin")) for a in answers] == [
        (200, origin["Origin"])] * len(answers)
