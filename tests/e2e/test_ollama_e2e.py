"""End to end: the official `ollama` client against the service in front of the real
llama-server with SmolLM2-135M (the models of `test_llama_server.py`: two chat models from
the same GGUF with different settings, so switching is a real swap, and an embeddings model).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Iterator

import ollama
import pytest

from tests.e2e.conftest import LlamaInstall
from tests.e2e.test_llama_server import CHAT_A, CHAT_B, EMBED, log_tail, serving_models
from tests.fakes import is_alive
from tests.integration.conftest import RunningService

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120, func_only=True)]

HI = [{"role": "user", "content": "Say hello."}]
SHORT = {"num_predict": 8, "temperature": 0}


@pytest.fixture(scope="module")
def service(llama_install: LlamaInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with serving_models(llama_install, tmp_path_factory.mktemp("e2e-ollama")) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> ollama.Client:
    return ollama.Client(host=service.url, timeout=110)


def test_chat_whole_with_llama_servers_counts(service: RunningService, client: ollama.Client) -> None:
    reply = client.chat(model=CHAT_A, messages=HI, stream=False, options=SHORT)
    assert reply.message.content, log_tail(service)
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count is not None and 0 < reply.eval_count <= 8
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.eval_duration and reply.prompt_eval_duration  # llama-server's timings
    assert reply.total_duration and reply.total_duration >= reply.eval_duration
    row = service.http.get("/api/metrics/activity", params={"limit": 1}).json()["data"][0]
    assert (row["req_path"], row["model"], row["generated_tokens"]) == ("/api/chat", CHAT_A, reply.eval_count)


def test_streamed_chat_across_a_swap(service: RunningService, client: ollama.Client) -> None:
    client.chat(model=CHAT_A, messages=HI, stream=False, options=SHORT)
    pid_a = service.pid_of(CHAT_A)
    parts = list(client.chat(model=CHAT_B, messages=HI, stream=True, options={"num_predict": 12}))
    text = "".join(part.message.content or "" for part in parts[:-1])
    assert text.strip(), log_tail(service)
    assert [part.done for part in parts] == [False] * (len(parts) - 1) + [True]
    last = parts[-1]
    assert last.eval_count is not None and 0 < last.eval_count <= 12
    assert last.load_duration and last.load_duration > 10_000_000  # B was started for it: > 10 ms
    assert not is_alive(pid_a), f"{CHAT_A}'s llama-server (pid {pid_a}) survived the swap"
    assert service.http.get("/running").json() == {"running": [CHAT_B]}


def test_generate_templated_and_raw(service: RunningService, client: ollama.Client) -> None:
    templated = client.generate(model=CHAT_A, prompt="What is the capital of France?", system="Answer briefly.",
                                options=SHORT)
    assert templated.response and templated.done, log_tail(service)
    raw = client.generate(model=CHAT_A, prompt="The capital of France is", raw=True, options=SHORT, stream=False)
    assert raw.response and raw.eval_count is not None and 0 < raw.eval_count <= 8


def test_embed_and_embeddings(service: RunningService, client: ollama.Client) -> None:
    embedded = client.embed(model=EMBED, input=["The quick brown fox.", "A mutex guards shared state."])
    first, second = embedded.embeddings
    assert len(first) == len(second) > 0 and first != second
    assert embedded.prompt_eval_count and embedded.prompt_eval_count > 0
    assert math.isclose(sum(x * x for x in first), 1.0, rel_tol=1e-3)  # normalised, as Ollama's /api/embed
    old = client.embeddings(model=EMBED, prompt="The quick brown fox.").embedding
    assert old == pytest.approx(first, abs=1e-5)
    assert service.http.get("/running").json() == {"running": [EMBED]}


def test_list_show_and_ps(service: RunningService, client: ollama.Client) -> None:
    assert [model.model for model in client.list().models] == sorted([CHAT_A, CHAT_B, EMBED])
    assert client.show(CHAT_B).capabilities == ["completion"]
    client.chat(model=CHAT_B, messages=HI, stream=False, options=SHORT, keep_alive="2m")
    (running,) = client.ps().models
    assert running.model == CHAT_B
    assert running.size and running.size > 50_000_000, running  # llama-server with the model mapped in
    assert running.expires_at is not None
    left = (running.expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 100 < left <= 120


def test_keep_alive_zero_unloads(service: RunningService, client: ollama.Client) -> None:
    client.generate(model=CHAT_A)  # load only
    pid = service.pid_of(CHAT_A)
    assert client.generate(model=CHAT_A, keep_alive=0).done_reason == "unload"
    assert not is_alive(pid)
    assert service.http.get("/running").json() == {"running": []}
