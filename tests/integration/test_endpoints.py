"""Every endpoint of the API contract, seen from a client, against real fake upstreams.

One service per module (starting it and swapping models is what costs time); each test
sets up the model state it needs, so tests do not depend on their order.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
from typing import Any, Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llama_swap.config import load_config
from llama_swap.server import docs
from llama_swap.server.app import build_app
from tests.fakes import fake_cmd
from tests.fakes.fake_upstream import EMBED_DIM, TINY_PNG_B64
from tests.integration.conftest import RunningService, serving, wait_until

CONFIG = f"""
healthCheckTimeout: 15
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=3)}
  beta:
    cmd: {fake_cmd(name="beta", chunks=3)}
  org/model-7b:
    cmd: {fake_cmd(name="org-model")}
  err500:
    cmd: {fake_cmd(name="err500", error_status=500)}
  err422:
    cmd: {fake_cmd(name="err422", error_status=422)}
  dier:
    cmd: {fake_cmd(name="dier", chunks=5, die_mid_stream=2)}
"""

USER_HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The service on CONFIG, shared by the module; upstreams must be gone after it stops."""
    tmp = tmp_path_factory.mktemp("endpoints")
    config_path = tmp / "config.yaml"
    config_path.write_text(CONFIG)
    with serving(config_path, tmp / "service.log") as service:
        yield service


@pytest.fixture
def client(svc: RunningService) -> openai.OpenAI:
    return svc.openai()


def upstream_of(response: httpx.Response) -> str:
    return response.headers["x-upstream-name"]


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]


def metric_samples(svc: RunningService) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = svc.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def fake_embedding(item: Any) -> list[float]:
    """The vector the fake upstream computes for one input (see fake_upstream.embeddings)."""
    digest = hashlib.sha256(json.dumps(item, separators=(",", ":")).encode()).digest()
    vec = [round(b / 255.0 - 0.5, 4) for b in digest[:EMBED_DIM]]
    return list(struct.unpack(f"<{EMBED_DIM}f", struct.pack(f"<{EMBED_DIM}f", *vec)))


# --------------------------------------------------------------------------- OpenAI-compatible


def test_chat_completion_non_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="alpha", messages=USER_HI)
    assert raw.status_code == 200
    assert raw.headers["x-upstream-name"] == "alpha"
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.model == "alpha"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "hello from alpha"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_chat_stream_with_include_usage_delivers_usage_last(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="alpha", messages=USER_HI, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert last.usage.total_tokens == last.usage.prompt_tokens + 3
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_response_carries_x_accel_buffering_no(svc: RunningService) -> None:
    body = {"model": "alpha", "messages": USER_HI, "stream": True}
    with svc.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        events = sse_data(response.read().decode())
    assert events[-1] == "[DONE]"
    # a non-streamed answer is not marked
    plain = svc.http.post("/v1/chat/completions", json={"model": "alpha", "messages": USER_HI})
    assert "x-accel-buffering" not in plain.headers


def test_completions_non_stream_and_stream(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="alpha", prompt="def binary_search(arr, target):", max_tokens=16)
    assert reply.object == "text_completion"
    assert reply.model == "alpha"
    assert reply.choices[0].text == "hello from alpha"
    assert reply.usage is not None and reply.usage.completion_tokens == 3

    chunks = list(
        client.completions.create(
            model="alpha", prompt="count", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "tok0 tok1 tok2 "
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings_single_and_batch(client: openai.OpenAI) -> None:
    single = client.embeddings.create(model="alpha", input="The quick brown fox jumps over the lazy dog")
    assert single.object == "list"
    assert single.model == "alpha"
    assert len(single.data) == 1
    assert single.data[0].index == 0
    assert single.data[0].embedding == pytest.approx(fake_embedding("The quick brown fox jumps over the lazy dog"))
    assert single.usage.prompt_tokens == 10

    inputs = ["First sentence to embed", "Second sentence to embed", "Third sentence to embed"]
    batch = client.embeddings.create(model="alpha", input=inputs)
    assert batch.model == "alpha"
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in batch.data)
    for item, datum in zip(inputs, batch.data):
        assert datum.embedding == pytest.approx(fake_embedding(item))
    assert batch.data[0].embedding != batch.data[1].embedding
    assert batch.usage.prompt_tokens == batch.usage.total_tokens == 5 + 6 + 5


def test_rerank(svc: RunningService) -> None:
    documents = ["a mutex is a lock", "bananas are yellow", "locks guard shared state"]
    response = svc.http.post(
        "/v1/rerank", json={"model": "alpha", "query": "what is a mutex?", "documents": documents, "top_n": 2}
    )
    assert response.status_code == 200
    assert upstream_of(response) == "alpha"
    data = response.json()
    assert data["model"] == "alpha"
    assert len(data["results"]) == 2
    scores = [r["relevance_score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {r["index"] for r in data["results"]} <= {0, 1, 2}


def test_responses_api(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="alpha", input="Say hello")
    assert reply.object == "response"
    assert reply.status == "completed"
    assert reply.model == "alpha"
    assert reply.output_text == "hello from alpha"
    assert reply.usage is not None and reply.usage.output_tokens == 3


def test_anthropic_messages(svc: RunningService) -> None:
    response = svc.http.post(
        "/v1/messages",
        json={"model": "alpha", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        headers={"anthropic-version": "2023-06-01", "x-api-key": "k"},
    )
    assert response.status_code == 200
    data = response.json()
    assert data["type"] == "message"
    assert data["role"] == "assistant"
    assert data["model"] == "alpha"
    assert data["content"] == [{"type": "text", "text": "hello from alpha"}]
    assert data["stop_reason"] == "end_turn"
    assert data["upstream"] == "alpha"


def test_audio_speech_returns_upstream_bytes_and_content_type(client: openai.OpenAI) -> None:
    speech = client.audio.speech.create(model="alpha", voice="alloy", input="hello")
    assert speech.response.headers["content-type"] == "audio/mpeg"
    audio = speech.read()
    assert audio == b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * (16 + len("hello"))


def test_audio_transcriptions_multipart_model_field_routes(client: openai.OpenAI) -> None:
    audio = b"RIFF" + bytes(range(256)) * 40
    for model in ("alpha", "beta"):
        raw = client.audio.transcriptions.with_raw_response.create(
            model=model, file=("speech.wav", audio, "audio/wav")
        )
        assert raw.headers["x-upstream-name"] == model
        body = json.loads(raw.text)
        assert body["upstream"] == model
        assert body["model"] == model
        assert body["filename"] == "speech.wav"
        assert body["text"] == f"transcribed {len(audio)} bytes"
        assert raw.parse().text == f"transcribed {len(audio)} bytes"


def test_transcription_model_field_after_a_large_file_routes(svc: RunningService) -> None:
    audio = os.urandom(8_000_000)
    response = svc.http.post(
        "/v1/audio/transcriptions",
        files=[("file", ("long.mp3", audio, "audio/mpeg")), ("model", (None, b"beta")), ("language", (None, b"en"))],
    )
    assert response.status_code == 200
    assert upstream_of(response) == "beta"
    assert response.json()["text"] == f"transcribed {len(audio)} bytes"
    assert response.json()["fields"] == {"model": "beta", "language": "en"}
    missing = svc.http.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF", "audio/wav")})
    assert missing.status_code == 400
    assert missing.json() == {"error": "missing 'model' field in request body"}


def test_images_generations(client: openai.OpenAI) -> None:
    images = client.images.generate(model="alpha", prompt="a cat", n=2)
    assert len(images.data) == 2
    assert images.data[0].b64_json == TINY_PNG_B64
    assert images.data[0].revised_prompt == "a cat"


# --------------------------------------------------------------------------- native llama-server


@pytest.mark.parametrize("path", ["/completion", "/infill"])
def test_native_completion_and_infill(svc: RunningService, path: str) -> None:
    body: dict[str, Any] = {"model": "alpha", "prompt": "What is Rust?", "n_predict": 20, "grammar": ""}
    if path == "/infill":
        body.update(input_prefix="def f(", input_suffix="):", input_extra=[])
    response = svc.http.post(path, json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["content"] == "hello from alpha"
    assert data["stop"] is True
    assert data["upstream"] == "alpha"

    with svc.http.stream("POST", path, json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(e) for e in sse_data(streamed.read().decode())]
    assert [e["content"] for e in events] == ["tok0 ", "tok1 ", "tok2 ", ""]
    assert [e["stop"] for e in events] == [False, False, False, True]


def test_slots_and_props_route_by_query(svc: RunningService) -> None:
    svc.http.get("/upstream/alpha/load")
    slots = svc.http.get("/slots", params={"model": "beta"})
    assert slots.status_code == 200
    assert upstream_of(slots) == "beta"
    assert [s["id"] for s in slots.json()] == [0, 1]
    assert {s["upstream"] for s in slots.json()} == {"beta"}
    assert svc.http.get("/running").json() == {"running": ["beta"]}

    props = svc.http.get("/props?model=alpha")
    assert props.status_code == 200
    assert upstream_of(props) == "alpha"
    assert props.json()["model_path"] == "/models/alpha.gguf"
    assert props.json()["total_slots"] == 2


def test_get_without_model_and_nothing_running_is_400(svc: RunningService) -> None:
    assert svc.http.get("/unload").status_code == 200
    response = svc.http.get("/slots")
    assert response.status_code == 400
    assert response.json() == {
        "error": "no model specified for GET /slots: add ?model=<id> (or a 'model' field in the body); "
        "none is running"
    }
    assert svc.http.get("/running").json() == {"running": []}


# --------------------------------------------------------------------------- errors from upstream


def test_upstream_500_is_forwarded_unchanged(svc: RunningService, client: openai.OpenAI) -> None:
    response = svc.http.post("/v1/chat/completions", json={"model": "err500", "messages": USER_HI})
    assert response.status_code == 500
    assert upstream_of(response) == "err500"
    assert response.content == (
        b'{"error":{"message":"fake upstream error","type":"server_error","code":500},"upstream":"err500"}'
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="err500", messages=USER_HI)
    assert caught.value.status_code == 500
    assert caught.value.body == {"message": "fake upstream error", "type": "server_error", "code": 500}


def test_upstream_4xx_is_forwarded_unchanged(svc: RunningService, client: openai.OpenAI) -> None:
    response = svc.http.post("/v1/embeddings", json={"model": "err422", "input": "x"})
    assert response.status_code == 422
    assert response.json() == {
        "error": {"message": "fake upstream error", "type": "server_error", "code": 422},
        "upstream": "err422",
    }
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="err422", messages=USER_HI)


def test_unknown_path_with_model_passes_through(svc: RunningService) -> None:
    response = svc.http.post("/v1/not-a-real-endpoint", json={"model": "alpha", "x": 1})
    assert response.status_code == 404
    assert upstream_of(response) == "alpha"
    assert response.json() == {
        "error": {"message": "Not Found: POST /v1/not-a-real-endpoint", "type": "not_found_error", "code": 404},
        "upstream": "alpha",
    }


# --------------------------------------------------------------------------- metrics & docs


def test_metrics_count_requests_swaps_and_running_models(svc: RunningService, client: openai.OpenAI) -> None:
    svc.http.get("/upstream/alpha/load")
    before = metric_samples(svc)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    client.chat.completions.create(model="alpha", messages=USER_HI)
    client.embeddings.create(model="alpha", input="x")
    svc.http.post("/v1/not-a-real-endpoint", json={"model": "alpha"})
    svc.http.post("/v1/chat/completions", json={"model": "err500", "messages": USER_HI})  # swap
    after = metric_samples(svc)

    total = "llamaswap_requests_total"
    assert delta(total, model="alpha", path="/v1/chat/completions", status="200") == 1
    assert delta(total, model="alpha", path="/v1/embeddings", status="200") == 1
    assert delta(total, model="alpha", path="other", status="404") == 1
    assert delta(total, model="err500", path="/v1/chat/completions", status="500") == 1
    assert delta("llamaswap_swaps_total", model="err500", outcome="ok") == 1
    assert delta("llamaswap_swaps_total", model="alpha", outcome="ok") == 0
    assert delta("llamaswap_swap_duration_seconds_count", model="err500") == 1
    assert delta("llamaswap_swap_duration_seconds_sum", model="err500") > 0
    assert after[("llamaswap_running_models", frozenset())] == 1
    svc.http.get("/unload")
    assert metric_samples(svc)[("llamaswap_running_models", frozenset())] == 0


def test_swagger_redirect_and_page(svc: RunningService) -> None:
    redirect = svc.http.get("/swagger")
    assert redirect.status_code == 301
    assert httpx.URL(svc.url + "/swagger").join(redirect.headers["location"]).path == "/swagger/"
    page = svc.http.get("/swagger/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="swagger-ui"' in page.text
    assert "openapi.json" in page.text
    bundle = svc.http.get("/swagger/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 10_000


def test_openapi_json_lists_every_served_route(svc: RunningService) -> None:
    response = svc.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    served = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in docs.HTTP_METHODS
        if method in item
    }
    assert served == docs.openapi_paths()
    # every explicit route of the app's table is documented
    app = build_app(load_config(svc.config_path), use_reaper=False)
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.name in docs.DOCS_ROUTE_NAMES or path in ("/", "/{tail}") or route.method == "HEAD":
            continue
        if path == "/upstream/{tail}":
            assert {p for m, p in served if p.startswith("/upstream/{model}")} >= {
                "/upstream/{model}",
                "/upstream/{model}/load",
                "/upstream/{model}/{path}",
            }
            continue
        assert (route.method, path) in served, f"{route.method} {path} is served but not documented"


# --------------------------------------------------------------------------- proxy behaviour


def _post_with_expect_continue(url: str, path: str, body: bytes, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    """POST as curl does for big bodies: headers, wait for `100 Continue`, then the body.

    Returns (final status, interim response head, final response body).
    """
    parsed = httpx.URL(url)
    with socket.create_connection((parsed.host, parsed.port), timeout=timeout) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\nUser-Agent: curl/8.5.0\r\n"
            f"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed before 100 Continue: {interim!r}"
            interim += chunk
        interim_head, _, rest = interim.partition(b"\r\n\r\n")
        assert interim_head.startswith(b"HTTP/1.1 100"), interim_head
        sock.sendall(body)
        data = rest
        while chunk := sock.recv(65536):
            data += chunk
    response_head, _, response_body = data.partition(b"\r\n\r\n")
    status = int(response_head.split(b" ", 2)[1])
    return status, interim_head, response_body


def test_large_body_with_expect_continue_reaches_upstream_intact(svc: RunningService) -> None:
    payload = {"model": "alpha", "input": ["x" * 1000 + str(i) for i in range(5000)]}
    body = json.dumps(payload).encode()
    assert len(body) > 5_000_000
    status, _, response_body = _post_with_expect_continue(svc.url, "/upstream/alpha/echo/big", body)
    assert status == 200
    echoed = json.loads(response_body)
    assert echoed["path"] == "/echo/big"
    assert echoed["body_len"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "expect" not in echoed["headers_lower"]

    # routed by the model in the (5 MB) body rather than by the URL
    status, _, response_body = _post_with_expect_continue(svc.url, "/echo", body)
    assert status == 200
    echoed = json.loads(response_body)
    assert echoed["upstream"] == "alpha"
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_hop_by_hop_headers_dropped_end_to_end_kept(svc: RunningService) -> None:
    response = svc.http.post(
        "/upstream/alpha/echo/headers",
        content=b"{}",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "per-connection",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
            "Authorization": "Bearer mysecretkey",
            "X-End-To-End": "kept",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200
    received = response.json()["headers_lower"]
    assert received["authorization"] == "Bearer mysecretkey"
    assert received["x-end-to-end"] == "kept"
    assert received["content-type"] == "application/json"
    for name in ("x-hop", "keep-alive", "te", "trailer", "proxy-authorization"):
        assert name not in received, f"hop-by-hop header {name} was forwarded"
    assert "x-hop" not in received.get("connection", "").lower()


def test_authorization_forwarded_on_model_routed_request(svc: RunningService) -> None:
    response = svc.http.post(
        "/echo/auth", json={"model": "alpha"}, headers={"Authorization": "Bearer mysecretkey"}
    )
    assert response.status_code == 200
    assert response.json()["headers_lower"]["authorization"] == "Bearer mysecretkey"


def test_model_id_with_slash_via_body_and_upstream_path(svc: RunningService, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="org/model-7b", messages=USER_HI)
    assert reply.choices[0].message.content == "hello from org-model"
    assert svc.http.get("/running").json() == {"running": ["org/model-7b"]}
    echoed = svc.http.get("/upstream/org/model-7b/echo/x?q=1")
    assert echoed.status_code == 200
    assert upstream_of(echoed) == "org-model"
    assert echoed.json()["path"] == "/echo/x"
    assert echoed.json()["query_string"] == "q=1"


def test_upstream_without_trailing_slash_redirects(svc: RunningService) -> None:
    response = svc.http.get("/upstream/alpha")
    assert response.status_code == 301
    assert response.headers["location"] == "/upstream/alpha/"
    slashed = svc.http.get("/upstream/org/model-7b")
    assert slashed.status_code == 301
    assert slashed.headers["location"] == "/upstream/org/model-7b/"
    assert svc.http.get("/upstream/nope").status_code == 404
    post = svc.http.post("/upstream/alpha?x=1", json={})
    assert post.status_code == 308  # keeps method and body
    assert post.headers["location"] == "/upstream/alpha/?x=1"


# --------------------------------------------------------------------------- upstream failures


def crash_noticed(svc: RunningService, model: str, pid: int) -> bool:
    """The service no longer reports ``pid`` for ``model`` (stopped, or restarted)."""
    return svc.health()["models"].get(model, {}).get("pid") != pid


def test_stream_dying_mid_way_raises_and_model_restarts(svc: RunningService, client: openai.OpenAI) -> None:
    svc.http.get("/upstream/dier/load")
    first_pid = svc.pid_of("dier")
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="dier", messages=USER_HI, stream=True):
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert received == "tok0 tok1 "
    assert "stopped in the middle of the response" in caught.value.message
    assert wait_until(lambda: crash_noticed(svc, "dier", first_pid), timeout=5)
    reply = client.chat.completions.create(model="dier", messages=USER_HI)
    assert reply.choices[0].message.content == "hello from dier"
    assert svc.pid_of("dier") != first_pid


def test_killed_upstream_is_restarted_and_the_request_answered(svc: RunningService) -> None:
    svc.http.get("/upstream/beta/load")
    pid = svc.pid_of("beta")
    os.kill(pid, signal.SIGKILL)  # the upstream the service started for this test's model
    body = {"model": "beta", "messages": USER_HI}
    response = svc.http.post("/v1/chat/completions", json=body, timeout=10)  # a hang fails here
    assert response.status_code == 200  # replayed on a fresh upstream if the crash was not yet noticed
    assert response.json()["choices"][0]["message"]["content"] == "hello from beta"
    assert wait_until(lambda: crash_noticed(svc, "beta", pid), timeout=5)
    assert svc.pid_of("beta") != pid
