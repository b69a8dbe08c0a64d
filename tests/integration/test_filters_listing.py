"""Request filters as the upstream sees them, and the /v1/models listing, end to end.

Filters are checked through the fake upstream's /echo endpoint: the service routes
`POST /echo/x` by the `model` in its body (like any inference path) and the fake answers
with the body it received.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FAKE_UPSTREAM, fake_cmd
from tests.integration.conftest import RunningService, serving, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.example.yaml"
EXAMPLE_ENV = {"MODELS_DIR": "/srv/models", "OPENROUTER_API_KEY": "sk-or-example"}

FILTERS = f"""
models:
  m:
    cmd: {fake_cmd(name="m")}
    useModelName: served-name
    aliases: [m-alias]
    filters:
      stripParams: "top_k, model, nested.drop, , top_k"
      setParams: {{temperature: 0.5, model: hijacked, extra: {{list: [1, 2]}}}}
      setParamsByID:
        "${{MODEL_ID}}": {{mode: plain}}
        "${{MODEL_ID}}:hot": {{temperature: 1.5, mode: hot}}
  plain:
    cmd: {fake_cmd(name="plain")}
    filters:
      strip_params: model
      setParams: {{model: hijacked}}
"""


def upstream_body(service: RunningService, body: dict[str, Any], path: str = "/echo/x") -> dict[str, Any]:
    """The JSON body the upstream received for ``body`` posted to ``path``."""
    response = service.http.post(path, json=body)
    assert response.status_code == 200, response.text
    return json.loads(response.json()["body_text"])


def test_filters_and_use_model_name_reach_the_upstream(start_service) -> None:
    service = start_service(FILTERS)
    sent = {"model": "m", "top_k": 5, "temperature": 0.9, "nested": {"drop": 1, "keep": 2}, "stream": False}
    assert upstream_body(service, sent) == {
        "model": "served-name",  # useModelName
        "temperature": 0.5,  # setParams overrides
        "nested": {"keep": 2},  # stripParams, nested path
        "stream": False,
        "extra": {"list": [1, 2]},  # setParams adds any JSON value
        "mode": "plain",  # setParamsByID for the id itself
    }
    # setParamsByID follows the name the client used, after setParams
    hot = upstream_body(service, {**sent, "model": "m:hot"})
    assert (hot["model"], hot["temperature"], hot["mode"]) == ("served-name", 1.5, "hot")
    # a plain alias gets no setParamsByID entry
    aliased = upstream_body(service, {**sent, "model": "m-alias"})
    assert (aliased["temperature"], "mode" in aliased, "top_k" in aliased) == (0.5, False, False)

    # `model` can be neither stripped nor set: without useModelName it is passed as sent
    assert upstream_body(service, {"model": "plain", "x": 1}) == {"model": "plain", "x": 1}

    # useModelName also rewrites a multipart form's model field, leaving the file alone
    form = service.http.post("/echo/x", data={"model": "m", "top_k": "5"}, files={"file": ("a.wav", b"RIFF..")})
    assert form.status_code == 200, form.text
    text = form.json()["body_text"]
    assert 'name="model"\r\n\r\nserved-name\r\n' in text and "RIFF.." in text
    assert 'name="top_k"' in text  # JSON filters do not apply to forms

    # a ?model= query is routing only: passed through untouched
    echoed = service.http.get("/echo/x", params={"model": "m", "top_k": "5"}).json()
    assert echoed["query_string"] == "model=m&top_k=5" and echoed["upstream"] == "m"

    # /upstream/<model>/... is a raw passthrough: no filters
    raw = upstream_body(service, sent, path="/upstream/m/echo/x")
    assert raw == sent


LISTING_PORT = random.randrange(20000, 32000, 50)  # below the ephemeral port range
LISTING = f"""
startPort: {LISTING_PORT}
includeAliasesInList: true
macros:
  ctx: 8192
  temp: 0.5
  flag: true
models:
  chat:
    cmd: {fake_cmd(name="chat")}
    name: "Chat ${{MODEL_ID}}"
    description: "  talks, up to ${{ctx}} tokens  "
    aliases: [talk]
    metadata:
      port: ${{PORT}}
      ctx: ${{ctx}}
      temp: ${{temp}}
      flag: ${{flag}}
      text: "ctx ${{ctx}} on ${{PORT}}"
      nested: {{list: ["${{MODEL_ID}}", "${{ctx}}"]}}
      context_length: 1
    capabilities: {{in: [text, image], out: [text], tools: true, context: 8192}}
  hidden:
    cmd: {fake_cmd(name="hidden")}
    unlisted: true
  reranker:
    cmd: {fake_cmd(name="reranker")}
    capabilities: {{reranker: true}}
  speech:
    cmd: {fake_cmd(name="speech")}
    metadata: {{context_length: 1}}
"""


def test_v1_models_renders_names_metadata_capabilities_and_aliases(start_service) -> None:
    service = start_service(LISTING)
    assert service.http.get("/upstream/speech/load").status_code == 200
    listing = service.http.get("/v1/models").json()
    assert listing["object"] == "list"
    records = listing["data"]
    created = {record.pop("created") for record in records}
    assert len(created) == 1 and isinstance(created.pop(), int)
    # each local model's status carries its command, as llama.cpp's router lists it
    args = {record["id"]: record["status"].pop("args") for record in records}
    assert args["chat"] == args["talk"] == [sys.executable, str(FAKE_UPSTREAM), "--port", str(LISTING_PORT),
                                            "--name", "chat"]
    owned = {"object": "model", "owned_by": "llama-swap"}
    unloaded = {"value": "unloaded"}
    chat = {
        "name": "Chat chat",
        "description": "talks, up to 8192 tokens",
        "architecture": {
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "modality": "text+image->text",
        },
        "capabilities": {"vision": True, "function_calling": True},
        "supported_parameters": ["tools", "tool_choice"],
        "context_length": 8192,
        "status": unloaded,
        **owned,
    }
    metadata = {
        "port": LISTING_PORT,
        "ctx": 8192,
        "temp": 0.5,
        "flag": True,
        "text": f"ctx 8192 on {LISTING_PORT}",
        "nested": {"list": ["chat", 8192]},  # exact "${x}" keeps its type, even nested
    }  # context_length is dropped: capabilities render it
    assert records == [
        {"id": "chat", **chat, "meta": {"llamaswap": {**metadata, "type": "model", "aliases": ["talk"]}, "n_ctx": 8192}},
        {"id": "reranker", **owned, "capabilities": {"reranker": True},
         "meta": {"llamaswap": {"type": "model"}}, "status": unloaded},
        {"id": "speech", **owned, "meta": {"llamaswap": {"context_length": 1, "type": "model"}},
         "status": {"value": "loaded"}},
        {"id": "talk", **chat, "meta": {"llamaswap": {**metadata, "type": "alias", "modelID": "chat"}, "n_ctx": 8192}},
    ]
    # /models is the same listing; the unlisted model is hidden but usable
    assert [record["id"] for record in service.http.get("/models").json()["data"]] == ["chat", "reranker", "speech", "talk"]
    assert service.http.get("/upstream/hidden/load").status_code == 200


@pytest.fixture
def example_service(tmp_path: Path) -> Any:
    """The service on the repo's example config, run in a scratch directory (it names
    relative paths) with the environment variables the example needs."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(EXAMPLE.read_text())
    with serving(config_path, tmp_path / "service.log", cwd=tmp_path, env=EXAMPLE_ENV) as service:
        yield service


def test_example_config_loads_and_lists_its_models(example_service: RunningService) -> None:
    service = example_service
    # its preload models need llama-server, which is not installed: logged, not fatal
    assert wait_until(lambda: service.log().count("preload failed") == 2, timeout=10), service.log()
    records = {record["id"]: record for record in service.http.get("/v1/models").json()["data"]}
    assert list(records) == sorted(records)
    assert set(records) == {
        "bge-reranker", "comfyui_auto", "gemma", "gemma3-12b", "gpt-4o-mini", "gpt-oss-120b",
        "gpt-oss-120b:high", "gpt-oss-120b:low", "kokoro-tts", "qwen-coder", "qwen3-coder-30b",
        "sd-xl", "whisper-large-v3",
        "chat", "coder",  # selectors ("best" is unlisted)
        "workstation/llama-3.3-70b", "workstation/qwen2.5-vl-72b",  # peer models, as <peer>/<model>
        "openrouter/qwen/qwen3-coder", "openrouter/deepseek/deepseek-chat-v3.1",
    }  # nomic-embed is unlisted; setParamsByID keys are aliases, listed with the others
    assert all(record["status"]["value"] == "unloaded" for record in records.values())
    assert records["chat"]["meta"]["llamaswap"] == {
        "kind": "router", "type": "selector", "strategy": "warm",
        "targets": ["gemma3-12b", "qwen3-coder-30b", "gpt-oss-120b"]}
    assert records["openrouter/qwen/qwen3-coder"]["name"] == "openrouter: qwen/qwen3-coder"

    oss = records["gpt-oss-120b"]
    assert oss["name"] == "gpt-oss 120B"
    assert oss["meta"]["llamaswap"] == {
        "port": 10004,
        "temperature": 0.7,
        "thinking": True,
        "context": 65536,
        "summary": "gpt-oss-120b on port 10004, context 65536",
        "tags": ["reasoning", "gpt-oss-120b", 99],  # an exact "${x}" keeps its type, quoted or not
        "type": "model",
        "aliases": ["gpt-oss-120b:high", "gpt-oss-120b:low"],
    }
    assert oss["capabilities"] == {"function_calling": True}
    assert oss["context_length"] == 65536 and oss["meta"]["n_ctx"] == 65536
    assert records["gpt-4o-mini"]["meta"]["llamaswap"] == {"type": "alias", "modelID": "qwen3-coder-30b"}
    assert records["gemma"]["name"] == "Gemma 3 12B (vision)"
    assert records["gemma"]["capabilities"] == {"vision": True}
    assert records["whisper-large-v3"]["capabilities"] == {"audio_transcriptions": True}
    assert records["kokoro-tts"]["capabilities"] == {"audio_speech": True}
    assert records["sd-xl"]["capabilities"] == {"vision": True, "image_generation": True, "image_to_image": True}
    assert records["sd-xl"]["architecture"]["modality"] == "text+image->image"
    assert records["bge-reranker"]["capabilities"] == {"reranker": True}

