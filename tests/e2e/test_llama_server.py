"""End to end: the service in front of the real llama-server with SmolLM2-135M.

One service for the module, on a config with two chat models from the same GGUF with
different settings (so switching between them is a real swap: different context, sampling
temperature and slot count) and an embeddings model. Tests make the state they need (which
model is loaded) themselves, so any subset runs on its own.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import LlamaInstall
from tests.fakes import is_alive
from tests.integration.conftest import RunningService, serving, wait_until

# Each test body is bounded; fixture setup (which may compile llama.cpp) is bounded by
# the setup fixture's own timeout instead.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120, func_only=True)]

CHAT_A = "smol-a"  # one slot: a long generation holds it until cancelled
CHAT_B = "smol-b"  # two slots, another temperature and context
EMBED = "smol-embed"
TEMP_A, TEMP_B = 0.7, 0.2
SLOTS_A, SLOTS_B = 1, 2
HI = [{"role": "user", "content": "Say hello."}]
SHORT = 8  # max tokens for ordinary requests: SmolLM2 makes ~45 tokens/s on two cores
LONG = 2000  # fits smol-a's 2048-token context with the prompt


def _free_port_block(count: int) -> int:
    """A start port with `count` consecutive free loopback ports (models get ${PORT} in id order)."""
    for _ in range(200):
        start = random.randrange(10000, 32000, 10)
        try:
            for port in range(start, start + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return start
    raise AssertionError("no block of free loopback ports found")


def config_text(install: LlamaInstall, start_port: int) -> str:
    base = f"{shlex.quote(str(install.server))} -m {shlex.quote(str(install.gguf))} --host 127.0.0.1 --port ${{PORT}} -t 2"
    commands = {
        CHAT_A: f"{base} -c 2048 --temp {TEMP_A} -np {SLOTS_A}",
        CHAT_B: f"{base} -c 1024 --temp {TEMP_B} -np {SLOTS_B}",
        EMBED: f"{base} -c 512 --embedding --pooling mean",
    }
    lines = [
        f"startPort: {start_port}",
        "logToStdout: both",
        "healthCheckTimeout: 60",
        "models:",
    ]
    for model, cmd in commands.items():
        lines += [f"  {model}:", f"    cmd: {json.dumps(cmd)}", "    proxy: http://127.0.0.1:${PORT}"]
    return "\n".join(lines) + "\n"


@contextmanager
def serving_models(install: LlamaInstall, work: Path) -> Iterator[RunningService]:
    """The service in front of this module's three real models (config_text), in ``work``."""
    config_path = work / "config.yaml"
    config_path.write_text(config_text(install, _free_port_block(3)))
    with serving(config_path, work / "service.log") as running:
        yield running


@pytest.fixture(scope="module")
def service(llama_install: LlamaInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with serving_models(llama_install, tmp_path_factory.mktemp("e2e")) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> openai.OpenAI:
    return service.openai()


def log_tail(service: RunningService, chars: int = 4000) -> str:
    return "service log (tail):\n" + service.log()[-chars:]


def chat(client: openai.OpenAI, model: str, max_tokens: int = SHORT, **extra: Any):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(model=model, messages=HI, max_tokens=max_tokens, **extra)


def stream_text(client: openai.OpenAI, model: str, max_tokens: int = SHORT) -> tuple[str, int]:
    """A streamed chat: its text and how many chunks carried content."""
    pieces = []
    with chat(client, model, max_tokens, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    return "".join(pieces), len(pieces)


def slots(service: RunningService, model: str) -> list[dict[str, Any]]:
    """llama-server's own /slots for `model`, through the /upstream passthrough."""
    response = service.http.get(f"/upstream/{model}/slots")
    assert response.status_code == 200, response.text
    return response.json()


def busy(service: RunningService, model: str) -> bool:
    return any(slot["is_processing"] for slot in slots(service, model))


def proc_argv(pid: int) -> list[str]:
    return [arg.decode(errors="replace") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]


def starts_logged(service: RunningService, model: str) -> int:
    return service.log().count(f"[{model}] starting:")


def test_chat_from_model_a_non_streaming_and_streaming(service: RunningService, client: openai.OpenAI) -> None:
    reply = chat(client, CHAT_A)
    assert reply.choices[0].message.content, reply
    assert reply.choices[0].finish_reason in ("length", "stop")
    text, chunks = stream_text(client, CHAT_A)
    assert text.strip() and chunks >= 1
    assert service.health()["models"][CHAT_A]["status"] == "running"
    assert service.http.get("/running").json() == {"running": [CHAT_A]}
    # A's own settings answer: one slot, its sampling temperature
    a_slots = slots(service, CHAT_A)
    assert len(a_slots) == SLOTS_A
    assert a_slots[0]["params"]["temperature"] == pytest.approx(TEMP_A, abs=1e-3)
    assert a_slots[0]["n_ctx"] == 2048


def test_switching_to_model_b_is_a_real_swap(service: RunningService, client: openai.OpenAI) -> None:
    chat(client, CHAT_A)
    pid_a = service.pid_of(CHAT_A)
    assert is_alive(pid_a)

    reply = chat(client, CHAT_B)
    assert reply.choices[0].message.content, reply
    assert not is_alive(pid_a), f"{CHAT_A}'s llama-server (pid {pid_a}) survived the swap to {CHAT_B}"
    text, _ = stream_text(client, CHAT_B)
    assert text.strip()

    assert service.http.get("/running").json() == {"running": [CHAT_B]}
    models = service.health()["models"]
    assert set(models) == {CHAT_B}
    pid_b = models[CHAT_B]["pid"]
    assert pid_b != pid_a and is_alive(pid_b)
    # B's process, with B's settings, is what answers
    b_slots = slots(service, CHAT_B)
    assert len(b_slots) == SLOTS_B
    used = [slot for slot in b_slots if "params" in slot]  # llama-server shows params once a slot served a task
    assert used and all(slot["params"]["temperature"] == pytest.approx(TEMP_B, abs=1e-3) for slot in used)
    assert {slot["n_ctx"] for slot in b_slots} == {1024 // SLOTS_B}
    assert "-np" in proc_argv(pid_b) and str(SLOTS_B) in proc_argv(pid_b)


def test_completions(service: RunningService, client: openai.OpenAI) -> None:
    reply = client.completions.create(model=CHAT_B, prompt="The capital of France is", max_tokens=SHORT)
    assert isinstance(reply.choices[0].text, str) and reply.choices[0].text
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= SHORT
    assert reply.usage.prompt_tokens > 0


def test_embeddings_batch(service: RunningService, client: openai.OpenAI) -> None:
    inputs = ["The quick brown fox.", "A mutex guards shared state.", "Bonjour tout le monde."]
    reply = client.embeddings.create(model=EMBED, input=inputs)
    assert [item.index for item in reply.data] == [0, 1, 2]
    dims = {len(item.embedding) for item in reply.data}
    assert len(dims) == 1 and dims.pop() > 0
    vectors = [tuple(item.embedding) for item in reply.data]
    assert len(set(vectors)) == 3, "three different sentences gave identical vectors"
    assert all(any(x != 0.0 for x in v) for v in vectors)
    assert service.http.get("/running").json() == {"running": [EMBED]}


def test_native_completion_and_slots_passthrough(service: RunningService) -> None:
    response = service.http.post("/completion", json={"model": CHAT_A, "prompt": "The sky is", "n_predict": 6})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["content"], str) and body["content"]
    assert 0 < body["tokens_predicted"] <= 6
    assert service.http.get("/running").json() == {"running": [CHAT_A]}

    named = service.http.get("/slots", params={"model": CHAT_A})
    assert named.status_code == 200, named.text
    assert [slot["id"] for slot in named.json()] == list(range(SLOTS_A))

    plain = service.http.get("/slots")  # no model named: goes to the one running model
    assert plain.status_code == 200, plain.text
    assert [slot["id"] for slot in plain.json()] == list(range(SLOTS_A))
    assert plain.json()[0]["n_ctx"] == named.json()[0]["n_ctx"]


def test_upstream_load_prewarms_then_request_is_served_by_the_same_process(
    service: RunningService, client: openai.OpenAI
) -> None:
    service.http.delete(f"/upstream/{CHAT_B}")  # from any state: B not running
    assert CHAT_B not in service.health()["models"]

    response = service.http.get(f"/upstream/{CHAT_B}/load")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "message": f"{CHAT_B} is ready"}
    entry = service.health()["models"][CHAT_B]
    assert entry["status"] == "running" and is_alive(entry["pid"])
    starts = starts_logged(service, CHAT_B)

    began = time.monotonic()
    reply = chat(client, CHAT_B, max_tokens=4)
    elapsed = time.monotonic() - began
    assert reply.choices[0].message.content
    assert service.pid_of(CHAT_B) == entry["pid"], "the pre-warmed process was replaced"
    assert starts_logged(service, CHAT_B) == starts, "the request started the model again"
    assert elapsed < 20, f"a request to a pre-warmed model took {elapsed:.1f} s"


def test_delete_upstream_stops_the_model(service: RunningService, client: openai.OpenAI) -> None:
    chat(client, CHAT_B, max_tokens=2)
    pid = service.pid_of(CHAT_B)
    assert is_alive(pid)

    response = service.http.delete(f"/upstream/{CHAT_B}")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "message": f"{CHAT_B} stopped"}
    assert not is_alive(pid), f"llama-server pid {pid} still alive after DELETE /upstream/{CHAT_B}"
    assert CHAT_B not in service.health()["models"]
    assert service.http.get("/running").json() == {"running": []}

    again = service.http.delete(f"/upstream/{CHAT_B}")
    assert again.json() == {"status": "error", "message": f"{CHAT_B} is not running"}


def test_health_reports_the_real_llama_server_pid(
    service: RunningService, client: openai.OpenAI, llama_install: LlamaInstall
) -> None:
    chat(client, CHAT_A, max_tokens=2)
    entry = service.health()["models"][CHAT_A]
    assert entry["status"] == "running"
    pid = entry["pid"]
    assert isinstance(pid, int) and is_alive(pid)
    argv = proc_argv(pid)
    assert "llama-server" in Path(argv[0]).name, argv
    assert Path(os.readlink(f"/proc/{pid}/exe")).resolve() == llama_install.server.resolve()
    assert str(llama_install.gguf) in argv
    assert argv[argv.index("--temp") + 1] == str(TEMP_A)


def generated_tokens(service: RunningService, model: str) -> float:
    prefix = f'llamaswap_tokens_total{{kind="generated",model="{model}"}} '
    for line in service.http.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def inflight(service: RunningService, model: str) -> float:
    prefix = f'llamaswap_inflight_requests{{model="{model}"}} '
    lines = [line for line in service.http.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0][len(prefix):]) if lines else 0.0


def test_usage_and_timings_from_real_responses(service: RunningService, client: openai.OpenAI) -> None:
    # earlier tests' requests are accounted once nothing is in flight any more
    assert wait_until(lambda: inflight(service, CHAT_A) == 0, timeout=10)
    counted_before = generated_tokens(service, CHAT_A)
    reply = chat(client, CHAT_A, max_tokens=12)
    usage = reply.usage
    assert usage is not None
    timings = (reply.model_extra or {}).get("timings")
    assert timings, f"llama-server's timings missing from the reply: {reply}"
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 12
    assert usage.completion_tokens == timings["predicted_n"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert timings["predicted_per_second"] > 0

    last_usage = None
    last_timings = None
    with chat(client, CHAT_A, max_tokens=12, stream=True, stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            if chunk.usage is not None:
                last_usage = chunk.usage
                last_timings = (chunk.model_extra or {}).get("timings")
    assert last_usage is not None, "a stream asked to include usage reported none"
    assert last_usage.prompt_tokens > 0
    assert 0 < last_usage.completion_tokens <= 12
    assert last_timings, "llama-server's timings missing from the stream's usage chunk"
    assert last_timings["predicted_n"] == last_usage.completion_tokens
    # the service read both answers' usage (the stream's incrementally) into its metrics
    expected = counted_before + usage.completion_tokens + last_usage.completion_tokens
    assert wait_until(lambda: generated_tokens(service, CHAT_A) == expected, timeout=5), (
        f"before={counted_before} now={generated_tokens(service, CHAT_A)} "
        f"reply={usage.completion_tokens} stream={last_usage.completion_tokens}"
    )


def test_client_disconnect_mid_generation_frees_the_server(service: RunningService, client: openai.OpenAI) -> None:
    chat(client, CHAT_A, max_tokens=2)
    assert len(slots(service, CHAT_A)) == 1 and not busy(service, CHAT_A)

    arrivals: list[float] = []
    requested = time.monotonic()
    stream = client.chat.completions.create(
        model=CHAT_A,
        messages=[{"role": "user", "content": "Tell me a very long story about a dragon."}],
        max_tokens=LONG,
        stream=True,
        extra_body={"ignore_eos": True},  # it really runs to LONG tokens unless cancelled
    )
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
                if len(arrivals) >= 12:
                    break
        assert len(arrivals) >= 12, "the long generation ended early"
        assert busy(service, CHAT_A), "llama-server's only slot is idle during the generation"
    finally:
        stream.close()
    closed = time.monotonic()
    # Tokens per second, from the request's start: an underestimate (it includes the prompt),
    # so `would_end` errs late even if chunks arrived in bursts.
    rate = len(arrivals) / max(arrivals[-1] - requested, 1e-3)
    would_end = closed + (LONG - len(arrivals)) / rate  # had the generation gone on

    freed = wait_until(lambda: not busy(service, CHAT_A), timeout=20, interval=0.1)
    assert freed, f"llama-server's slot is still generating 20 s after the client left\n{log_tail(service)}"

    began = time.monotonic()
    first_token = None
    with client.chat.completions.create(model=CHAT_A, messages=HI, max_tokens=SHORT, stream=True) as follow:
        for chunk in follow:
            if first_token is None and chunk.choices and chunk.choices[0].delta.content:
                first_token = time.monotonic()
    done = time.monotonic()
    assert first_token is not None, "the next request got no tokens"
    assert first_token - began < 20, f"first token after {first_token - began:.1f} s"
    assert done - closed < 20, f"the next request ended {done - closed:.1f} s after the disconnect"
    assert done < would_end, (
        f"the next request ended {done - would_end:.1f} s after the abandoned generation would have ended "
        f"({rate:.0f} tokens/s)"
    )


def test_streams_and_plain_requests_back_to_back_all_succeed(service: RunningService) -> None:
    """llama-server closes its connection right after every stream (and drops what reaches
    it meanwhile, without a reset): a request sent on that connection in that instant would
    be lost, and must not be sent twice either. So none may go there: 120 requests, streams
    and plain ones alternating on one client connection, every one answered."""
    body = {"model": CHAT_A, "messages": HI, "max_tokens": 1}
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for i in range(120):
            response = client.post("/v1/chat/completions", json={**body, "stream": bool(i % 2)})
            assert response.status_code == 200, (i, response.text)
    assert "closes its connection after every stream" in service.log()


def test_llama_cpp_router_api_in_front_of_the_real_llama_server(
    service: RunningService, client: openai.OpenAI, llama_install: LlamaInstall,
) -> None:
    """llama.cpp's router API (what its web UI and pi-llama call) over real llama-servers."""
    http = service.http
    assert http.get("/unload").status_code == 200  # start with nothing running
    assert http.get("/props", params={"autoload": "false"}).json()["role"] == "router"
    assert http.post("/models/load", json={"model": CHAT_B}).json() == {"success": True}
    record = {r["id"]: r for r in http.get("/models").json()["data"]}[CHAT_B]
    pid = service.pid_of(CHAT_B)
    assert record["status"] == {"value": "loaded", "args": proc_argv(pid)}, log_tail(service)  # what really runs
    props = http.get("/props", params={"model": CHAT_B, "autoload": "false"})
    assert props.status_code == 200, props.text
    assert props.json()["model_path"] == str(llama_install.gguf)  # llama-server's own props
    assert props.json()["total_slots"] == SLOTS_B
    assert props.json()["default_generation_settings"]["params"]["temperature"] == pytest.approx(TEMP_B, abs=1e-3)
    assert chat(client, CHAT_B).choices[0].message.content
    assert http.post("/models/unload", json={"model": CHAT_B}).json() == {"success": True}
    assert {r["id"]: r for r in http.get("/v1/models").json()["data"]}[CHAT_B]["status"]["value"] == "unloaded"
    assert not is_alive(pid)
