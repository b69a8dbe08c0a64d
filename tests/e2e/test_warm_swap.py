"""Warm swaps end to end: the real llama-server with SmolLM2, a long conversation on model A,
then A stopped — by a swap to B, by its TTL, or by restarting the service — and the next
turn on A. With `warmSwap: true` its KV cache is back (`timings.cache_n` covers ≥ 90% of the
prompt); a changed command discards the saved cache instead of reusing it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from tests.e2e.conftest import LlamaInstall
from tests.e2e.test_llama_server import _free_port_block
from tests.integration.conftest import RunningService, serving, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240, func_only=True)]

A, B = "smol-long", "smol-other"
# about 900 tokens of context: long enough that prefilling it again is what a user waits for
FACTS = " ".join(f"Fact {n}: the {n}th lantern on the harbour wall is painted {colour}." for n, colour in
                 zip(range(1, 61), ["red", "green", "blue", "amber", "white", "violet"] * 10))
TURN_1 = [{"role": "system", "content": "You answer briefly."},
          {"role": "user", "content": f"Remember these facts. {FACTS} Which colour is lantern 7?"}]


def config(install: LlamaInstall, work: Path, *, warm: bool = True, ttl: int = 0, temp: str = "0") -> Path:
    base = f"{shlex.quote(str(install.server))} -m {shlex.quote(str(install.gguf))} --host 127.0.0.1 --port ${{PORT}} -t 2"
    models = {
        A: f"{base} -c 4096 -np 1 --temp {temp}",
        B: f"{base} -c 512 -np 1",
    }
    lines = [f"startPort: {_free_port_block(2)}", "logToStdout: both", "healthCheckTimeout: 60",
             f"warmSwap: {'true' if warm else 'false'}", f"warmSwapDir: {json.dumps(str(work / 'warm'))}", "models:"]
    for model, cmd in models.items():
        lines += [f"  {model}:", f"    cmd: {json.dumps(cmd)}"]
        if model == A and ttl:
            lines.append(f"    ttl: {ttl}")
    path = work / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def chat(service: RunningService, model: str, messages: list[dict[str, str]]) -> Any:
    client = service.openai()
    return client.chat.completions.create(model=model, messages=messages, max_tokens=8)


def first_turn(service: RunningService) -> list[dict[str, str]]:
    """Turn one on A (its whole prompt computed); the messages of turn two."""
    answer = chat(service, A, TURN_1)
    assert answer.model_extra["timings"]["cache_n"] == 0
    return [*TURN_1, {"role": "assistant", "content": answer.choices[0].message.content},
            {"role": "user", "content": "And lantern 8?"}]


def cached_share(answer: Any) -> float:
    """The share of the prompt that came out of the KV cache."""
    timings = answer.model_extra["timings"]
    return timings["cache_n"] / (timings["cache_n"] + timings["prompt_n"])


def running(service: RunningService) -> list[str]:
    return service.http.get("/running").json()["running"]


class Services:
    """Services started on configs, each stopped (checking for orphans) at the end or on demand."""

    def __init__(self, work: Path) -> None:
        self._work = work
        self._open: dict[int, Any] = {}

    def start(self, path: Path) -> RunningService:
        context = serving(path, self._work / f"service{len(self._open)}.log")
        service = context.__enter__()
        self._open[id(service)] = context
        return service

    def stop(self, service: RunningService) -> None:
        """The graceful shutdown a user's Ctrl-C or systemd gives: models saved, then stopped."""
        self._open.pop(id(service)).__exit__(None, None, None)

    def close(self) -> None:
        for context in reversed(list(self._open.values())):
            context.__exit__(None, None, None)


@pytest.fixture
def services(llama_install: LlamaInstall, work: Path) -> Iterator[Services]:
    running = Services(work)
    yield running
    running.close()


def test_a_swap_away_and_back_keeps_the_conversation_cached(llama_install: LlamaInstall, work: Path,
                                                           services: Services) -> None:
    service = services.start(config(llama_install, work))
    turn_2 = first_turn(service)
    chat(service, B, [{"role": "user", "content": "Hi"}])
    assert running(service) == [B]
    answer = chat(service, A, turn_2)
    assert cached_share(answer) >= 0.9, service.log()[-3000:]
    metrics = service.http.get("/metrics").text
    assert f'llamaswap_warm_swap_restore_hits_total{{model="{A}"}} 1.0' in metrics
    assert f'llamaswap_warm_swap_prefill_tokens_avoided_total{{model="{A}"}}' in metrics
    models = {m["id"]: m for m in service.http.get("/api/models").json()}
    assert models[A]["warm_cache_bytes"] > 1_000_000  # ~23 KB per token of SmolLM2's cache


def test_without_warm_swaps_the_same_swap_loses_the_cache(llama_install: LlamaInstall, work: Path,
                                                         services: Services) -> None:
    service = services.start(config(llama_install, work, warm=False))
    turn_2 = first_turn(service)
    chat(service, B, [{"role": "user", "content": "Hi"}])
    answer = chat(service, A, turn_2)
    assert answer.model_extra["timings"]["cache_n"] == 0
    assert not (work / "warm").exists()


def test_an_unload_by_ttl_keeps_the_conversation_cached(llama_install: LlamaInstall, work: Path,
                                                        services: Services) -> None:
    service = services.start(config(llama_install, work, ttl=1))
    turn_2 = first_turn(service)
    assert wait_until(lambda: running(service) == [], timeout=30), "the TTL did not unload the model"
    client: openai.OpenAI = service.openai()  # streamed this time: the client sees nothing different
    parts = list(client.chat.completions.create(model=A, messages=turn_2, max_tokens=8, stream=True))
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    [last] = [p for p in parts if p.model_extra.get("timings")]
    assert cached_share(last) >= 0.9, service.log()[-3000:]


def test_a_service_restart_keeps_the_conversation_cached(llama_install: LlamaInstall, work: Path,
                                                         services: Services) -> None:
    path = config(llama_install, work)
    first = services.start(path)
    turn_2 = first_turn(first)
    services.stop(first)
    second = services.start(path)
    answer = chat(second, A, turn_2)
    assert cached_share(answer) >= 0.9, second.log()[-3000:]


def test_a_changed_command_discards_the_saved_cache(llama_install: LlamaInstall, work: Path, services: Services) -> None:
    first = services.start(config(llama_install, work))
    turn_2 = first_turn(first)
    services.stop(first)
    saved = list((work / "warm").rglob("*.bin"))
    assert saved, "nothing was saved at shutdown"
    second = services.start(config(llama_install, work, temp="0.5"))  # another command: the old cache is stale
    answer = chat(second, A, turn_2)
    assert answer.model_extra["timings"]["cache_n"] == 0
    assert not any(path.exists() for path in saved)
    assert "discarded 1 saved cache file(s): its command or model file changed" in second.log()


SHIPS = " ".join(f"Ship {n} in the fleet is named the {name} {n} and sails on {day}." for n, name, day in
                 zip(range(1, 51), ["Albatross", "Heron", "Petrel", "Gannet", "Tern"] * 10,
                     ["Monday", "Tuesday", "Thursday", "Saturday", "Sunday"] * 10))
OTHER_TURN_1 = [{"role": "system", "content": "Reply in one word."},
                {"role": "user", "content": f"Here is the fleet. {SHIPS} On which day does ship 3 sail?"}]


def test_each_slot_of_a_parallel_model_gets_its_own_conversation_back(llama_install: LlamaInstall, work: Path,
                                                                     services: Services) -> None:
    """`--parallel 2`: two conversations held in two slots are saved and restored into the same
    slot ids, and llama-server matches each next turn to its own slot again."""
    path = config(llama_install, work)
    path.write_text(path.read_text().replace("-c 4096 -np 1", "-c 8192 -np 2"))
    service = services.start(path)
    turn_2 = first_turn(service)
    other = chat(service, A, OTHER_TURN_1)
    assert other.model_extra["timings"]["cache_n"] == 0  # a slot of its own, not the first conversation's
    other_2 = [*OTHER_TURN_1, {"role": "assistant", "content": other.choices[0].message.content},
               {"role": "user", "content": "And ship 4?"}]
    chat(service, B, [{"role": "user", "content": "Hi"}])
    assert sorted(p.name.split(".")[-2] for p in (work / "warm").rglob(f"{A}-*.bin")) == ["slot0", "slot1"]
    for messages in (turn_2, other_2):
        answer = chat(service, A, messages)
        assert cached_share(answer) >= 0.9, service.log()[-3000:]
    log = service.log()
    assert "restored slot 0" in log and "restored slot 1" in log, log[-3000:]
