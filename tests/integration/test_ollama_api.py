"""The Ollama API, spoken by the official `ollama` client, against fake OpenAI upstreams.

What each test checks is what an Ollama client sees (its own response objects, errors and
streams), and what the model's server was sent (the fake records it: `GET /received`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import ollama
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService, wait_until

HI = [{"role": "user", "content": "hi"}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def config(**models: str) -> str:
    """Fake upstreams of 3 chunks a stream, each with its extra YAML lines."""
    lines = ["models:"]
    for name, extra in models.items():
        if "cmd:" not in extra:
            extra = f"cmd: {fake_cmd(name=name, chunks=3)}\n{extra}"
        lines += [f"  {name}:", *[f"    {line}" for line in extra.splitlines()]]
    return "\n".join(lines) + "\n"


@pytest.fixture
def service(start_service: Callable[[str], RunningService]) -> RunningService:
    return start_service(config(
        alpha="aliases: [a1]\nttl: 300\ncapabilities:\n  tools: true\n  in: [text, image]\n  out: [text]\n  context: 4096",
        beta="name: Beta",
        hidden="unlisted: true",
    ))


def client(service: RunningService) -> ollama.Client:
    return ollama.Client(host=service.url, timeout=60)


def received(service: RunningService, model: str) -> list[dict[str, Any]]:
    """What the model's server was sent, oldest first."""
    return service.http.get(f"/upstream/{model}/received").json()["received"]


def activity(service: RunningService) -> list[dict[str, Any]]:
    return service.http.get("/api/metrics/activity", params={"order": "asc", "limit": 100}).json()["data"]


# ---------------------------------------------------------------------------- listings


def test_list_show_and_version(service: RunningService) -> None:
    ollama_client = client(service)
    listed = ollama_client.list()
    assert [model.model for model in listed.models] == ["alpha", "beta"]  # unlisted hidden, as in /v1/models
    assert all(model.digest and model.modified_at for model in listed.models)

    shown = ollama_client.show("alpha")
    assert shown.capabilities == ["completion", "tools", "vision"]
    assert shown.modelinfo == {"general.architecture": "llama-swap", "general.name": "alpha",
                               "llama-swap.context_length": 4096}
    assert ollama_client.show("a1:latest").capabilities == shown.capabilities  # an alias, with Ollama's tag

    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.show("nope")
    assert (caught.value.status_code, caught.value.error) == (404, "model 'nope' not found in config")

    version = service.http.get("/api/version").json()  # what Ollama clients read: `version`
    assert isinstance(version["version"], str) and version["version"]


def test_ps_lists_running_models_with_their_unload_time(service: RunningService) -> None:
    ollama_client = client(service)
    assert ollama_client.ps().models == []
    ollama_client.chat(model="alpha", messages=HI, stream=False)
    (running,) = ollama_client.ps().models
    assert (running.model, running.context_length) == ("alpha", 4096)
    assert running.size and running.size > 0  # the server's resident memory
    assert running.expires_at is not None
    left = running.expires_at - datetime.now(timezone.utc)
    assert timedelta(seconds=290) < left <= timedelta(seconds=300)  # its ttl

    ollama_client.chat(model="alpha", messages=HI, stream=False, keep_alive=-1)
    (kept,) = ollama_client.ps().models
    assert kept.expires_at is not None and kept.expires_at.year > 2200  # Ollama's "forever"


# ---------------------------------------------------------------------------- inference


def test_chat_whole_and_streamed(service: RunningService) -> None:
    ollama_client = client(service)
    whole = ollama_client.chat(model="alpha", messages=HI, stream=False)
    assert (whole.model, whole.message.role, whole.message.content, whole.done, whole.done_reason) == (
        "alpha", "assistant", "hello from alpha", True, "stop")
    assert whole.eval_count == 3 and whole.prompt_eval_count and whole.prompt_eval_count > 0
    assert whole.total_duration and whole.load_duration is not None and whole.total_duration >= whole.load_duration

    parts = list(ollama_client.chat(model="a1", messages=HI, stream=True))
    assert [part.message.content for part in parts] == ["tok0 ", "tok1 ", "tok2 ", ""]
    assert [part.done for part in parts] == [False, False, False, True]
    assert all(part.model == "a1" for part in parts)  # the name the client used
    last = parts[-1]
    assert (last.done_reason, last.eval_count) == ("stop", 3)
    assert last.eval_duration and last.prompt_eval_duration  # from the upstream's timings

    assert [entry["path"] for entry in received(service, "alpha")] == ["/v1/chat/completions"] * 2
    assert received(service, "alpha")[-1]["body"]["stream_options"] == {"include_usage": True}
    assert "accept-encoding" not in {name.lower() for name in received(service, "alpha")[-1]["headers"]}


def test_chat_without_stream_field_streams_ndjson(service: RunningService) -> None:
    """Ollama streams unless `stream: false`: plain HTTP sees NDJSON lines."""
    response = service.http.post("/api/chat", json={"model": "beta", "messages": HI})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    lines = response.text.splitlines()
    assert len(lines) == 4 and '"done":true' in lines[-1]


def test_generate_templated_and_raw(service: RunningService) -> None:
    ollama_client = client(service)
    templated = ollama_client.generate(model="alpha", prompt="why?", system="be brief")
    assert (templated.response, templated.done, templated.eval_count) == ("hello from alpha", True, 3)
    streamed = [part.response for part in ollama_client.generate(model="alpha", prompt="<s>why?", raw=True,
                                                                  stream=True)]
    assert streamed == ["tok0 ", "tok1 ", "tok2 ", ""]
    chat_call, raw_call = received(service, "alpha")
    assert (chat_call["path"], chat_call["body"]["messages"]) == ("/v1/chat/completions", [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}])
    assert (raw_call["path"], raw_call["body"]["prompt"]) == ("/v1/completions", "<s>why?")


def test_embed_and_embeddings_equal_the_openai_vectors(service: RunningService) -> None:
    ollama_client = client(service)
    embedded = ollama_client.embed(model="beta", input=["one", "two"])
    plain = service.http.post("/v1/embeddings", json={"model": "beta", "input": ["one", "two"]}).json()
    openai_vectors = [item["embedding"] for item in plain["data"]]
    assert embedded.embeddings == openai_vectors
    assert embedded.prompt_eval_count and embedded.prompt_eval_count > 0
    assert ollama_client.embeddings(model="beta", prompt="one").embedding == openai_vectors[0]
    assert [entry["path"] for entry in received(service, "beta")] == ["/v1/embeddings"] * 3


def test_options_format_tools_images_and_think_reach_the_upstream(service: RunningService) -> None:
    def weather(city: str) -> str:
        """Get the weather.

        Args:
          city: the city
        """
        return "sunny"

    list(client(service).chat(
        model="alpha", stream=True, tools=[weather], think=True, keep_alive="10m",
        messages=[{"role": "user", "content": "what is it?", "images": [PNG]}],
        format={"type": "object", "properties": {"answer": {"type": "string"}}},
        options={"temperature": 0.25, "num_predict": 7, "top_k": 5, "stop": ["END"], "num_ctx": 99999,
                 "dry_multiplier": 0.5},
    ))
    body = received(service, "alpha")[-1]["body"]
    assert {key: body[key] for key in ("temperature", "max_tokens", "top_k", "stop", "dry_multiplier")} == {
        "temperature": 0.25, "max_tokens": 7, "top_k": 5, "stop": ["END"], "dry_multiplier": 0.5}
    assert "num_ctx" not in body and "options" not in body and "keep_alive" not in body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "format", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}}
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["tools"][0]["function"]["name"] == "weather"
    assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def test_async_client(service: RunningService) -> None:
    async def run() -> tuple[str, list[str], int]:
        async_client = ollama.AsyncClient(host=service.url, timeout=60)
        whole = await async_client.chat(model="beta", messages=HI, stream=False)
        parts = [part.response async for part in await async_client.generate(model="beta", prompt="x", stream=True)]
        embedded = await async_client.embed(model="beta", input="x")
        return whole.message.content or "", parts, len(embedded.embeddings)

    content, parts, vectors = asyncio.run(run())
    assert (content, parts, vectors) == ("hello from beta", ["tok0 ", "tok1 ", "tok2 ", ""], 1)


# ---------------------------------------------------------------------------- the one path


def test_streamed_chat_across_a_swap(service: RunningService) -> None:
    ollama_client = client(service)
    ollama_client.chat(model="alpha", messages=HI, stream=False)
    alpha_pid = service.pid_of("alpha")
    parts = list(ollama_client.chat(model="beta", messages=HI, stream=True))
    assert "".join(part.message.content or "" for part in parts) == "tok0 tok1 tok2 "
    assert parts[-1].load_duration and parts[-1].load_duration > 0  # the swap
    assert service.http.get("/running").json() == {"running": ["beta"]}
    assert service.pid_of("beta") != alpha_pid
    assert ollama_client.chat(model="alpha", messages=HI, stream=False).message.content == "hello from alpha"


def test_the_activity_row_and_metrics_have_the_token_counts(service: RunningService) -> None:
    ollama_client = client(service)
    parts = list(ollama_client.chat(model="alpha", messages=HI, stream=True))
    whole = ollama_client.generate(model="alpha", prompt="x", stream=False)
    rows = activity(service)
    assert [(row["req_path"], row["resp_status_code"]) for row in rows] == [("/api/chat", 200), ("/api/generate", 200)]
    assert (rows[0]["prompt_tokens"], rows[0]["generated_tokens"]) == (parts[-1].prompt_eval_count, parts[-1].eval_count)
    assert (rows[1]["prompt_tokens"], rows[1]["generated_tokens"]) == (whole.prompt_eval_count, whole.eval_count)
    metrics = service.http.get("/metrics").text
    assert 'llamaswap_requests_total{model="alpha",path="/api/chat",status="200"} 1.0' in metrics


def test_concurrency_limit_answers_429(start_service: Callable[[str], RunningService]) -> None:
    service = start_service(config(slow="concurrencyLimit: 1"))
    ollama_client = client(service)
    stream = ollama_client.chat(model="slow", messages=HI, stream=True, options={"n_chunks": 20, "chunk_delay": 0.2})
    first = next(stream)  # in flight now
    assert first.message.content == "tok0 "
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="slow", messages=HI, stream=False)
    assert caught.value.status_code == 429
    stream.close()


def test_keep_alive_loads_unloads_and_unloads_after_answering(service: RunningService) -> None:
    ollama_client = client(service)
    loaded = ollama_client.generate(model="beta")  # no prompt: load only
    assert (loaded.done, loaded.done_reason) == (True, "load")
    assert service.http.get("/running").json() == {"running": ["beta"]}
    assert activity(service) == []  # nothing was generated

    unloaded = ollama_client.chat(model="beta", messages=[], keep_alive=0)
    assert (unloaded.done_reason, unloaded.message.content) == ("unload", "")
    assert service.http.get("/running").json() == {"running": []}

    answered = ollama_client.chat(model="beta", messages=HI, stream=False, keep_alive=0)
    assert answered.message.content == "hello from beta"
    assert wait_until(lambda: service.http.get("/running").json() == {"running": []}, timeout=5)


def test_errors_reach_the_client(start_service: Callable[[str], RunningService]) -> None:
    service = start_service(config(ok="", dies=f"cmd: {fake_cmd(name='dies', chunks=5, die_mid_stream=2)}"))
    ollama_client = client(service)
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="nope", messages=HI)
    assert (caught.value.status_code, caught.value.error) == (404, "model 'nope' not found in config")

    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="ok", messages=HI, options={"temperature": "hot"})
    assert (caught.value.status_code, caught.value.error) == (400, "option 'temperature' must be a number, got \"hot\"")

    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="ok", messages=HI, keep_alive="a while")
    assert caught.value.status_code == 400 and "invalid keep_alive 'a while'" in caught.value.error

    seen = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in ollama_client.chat(model="dies", messages=HI, stream=True):
            seen.append(part.message.content)
    assert seen == ["tok0 ", "tok1 "]
    assert caught.value.error == "upstream 'dies' stopped in the middle of the response"
    assert activity(service)[-1]["resp_status_code"] == 502


def test_a_peer_model_through_ollama(start_service: Callable[[str], RunningService], remote: int) -> None:
    service = start_service(config(local="") + f"peers:\n  far:\n    proxy: http://127.0.0.1:{remote}\n"
                                                "    models: [remote-a]\n")
    ollama_client = client(service)
    parts = list(ollama_client.chat(model="far/remote-a", messages=HI, stream=True))
    assert "".join(part.message.content or "" for part in parts) == "tok0 tok1 tok2 tok3 tok4 "
    assert parts[-1].done and parts[-1].eval_count == 5
    sent = httpx.get(f"http://127.0.0.1:{remote}/received").json()["received"][-1]
    assert (sent["path"], sent["body"]["model"]) == ("/v1/chat/completions", "remote-a")
    assert "far/remote-a" in [model.model for model in ollama_client.list().models]
    assert service.http.get("/running").json() == {"running": []}
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.generate(model="far/remote-a")  # load only: a peer loads its models itself
    assert (caught.value.status_code, caught.value.error) == (
        400, "model 'far/remote-a' is served by peer 'far': it is not loaded or unloaded here")
