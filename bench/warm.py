"""Warm swaps with the real llama-server + SmolLM2-135M (issue #15).

Two models on the same GGUF, one at a time. Each trial: a conversation of about 2,000 tokens (the issue's figure)
on smol-a (turn one), a swap to smol-b (`GET /upstream/smol-b/load`: smol-a stopped, which
with warm swaps saves its slot first), a swap back (`…/smol-a/load`: restored before it is
ready), then turn two of the conversation, timed alone (`max_tokens: 1`: its prefill). The
same trials run on a service without warm swaps and on one with them. Reported: the next
turn's time with and without (and the ratio), `timings.cache_n` of the next turn, and what
warm swaps add to a swap — the save and restore time the service measured itself
(`llamaswap_warm_swap_{save,restore}_seconds`), beside the swap times of both runs, which
llama-server's own start-time noise (0.5–3 s on a busy machine) makes too coarse to tell
50 ms apart.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import procs, service
from bench.stats import median, summary
from bench.swap import LlamaInstall

A, B = "smol-a", "smol-b"
FACTS = " ".join(f"Fact {n}: the {n}th lantern on the harbour wall is painted {colour}." for n, colour in
                 zip(range(1, 104), ["red", "green", "blue", "amber", "white", "violet"] * 18))
TURN_1 = [{"role": "system", "content": "You answer briefly."},
          {"role": "user", "content": f"Remember these facts. {FACTS} Which colour is lantern 7?"}]


def _models(install: LlamaInstall) -> list[service.ModelSpec]:
    port_a, port_b = procs.free_ports(2)
    return [
        service.ModelSpec(A, port_a, [*service.llama_argv(install.server, install.gguf, port_a)[:-2],
                                      "--ctx-size", "4096", "--parallel", "1"]),
        service.ModelSpec(B, port_b, service.llama_argv(install.server, install.gguf, port_b)),
    ]


def _chat(svc: service.Service, messages: list[dict[str, str]], max_tokens: int) -> dict[str, object]:
    body = json.dumps({"model": A, "messages": messages, "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"{svc.url}/v1/chat/completions", body, {"Content-Type": "application/json"})
    with service._OPENER.open(request, timeout=300) as response:
        return json.loads(response.read())


def _timed_load(svc: service.Service, model: str) -> float:
    began = time.perf_counter()
    svc.load(model, timeout=120)
    return time.perf_counter() - began


def _summary_mean_ms(metrics: str, name: str) -> float | None:
    """The mean of a Prometheus summary (`_sum` / `_count`) for smol-a, in ms."""
    values = {}
    for line in metrics.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f'{name}_{part}{{model="{A}"}} '):
                values[part] = float(line.split()[-1])
    if not values.get("count"):
        return None
    return round(values["sum"] / values["count"] * 1e3, 1)


def _run(install: LlamaInstall, workdir: Path, caches: Path, *, warm: bool, trials: int) -> dict[str, object]:
    settings = {"warmSwap": warm, "warmSwapDir": str(caches)}
    next_turn: list[float] = []
    away: list[float] = []
    back: list[float] = []
    cached: list[int] = []
    prompt: list[int] = []
    with service.start(workdir, _models(install), together=False, cpus=None, name=f"service-warm-{warm}",
                       settings=settings) as svc:
        for _ in range(trials):
            first = _chat(svc, TURN_1, 8)
            reply = first["choices"][0]["message"]["content"]  # type: ignore[index]
            turn_2 = [*TURN_1, {"role": "assistant", "content": reply}, {"role": "user", "content": "And lantern 8?"}]
            away.append(_timed_load(svc, B))
            back.append(_timed_load(svc, A))
            began = time.perf_counter()
            answer = _chat(svc, turn_2, 1)
            next_turn.append(time.perf_counter() - began)
            timings = answer["timings"]  # type: ignore[index]
            cached.append(int(timings["cache_n"]))
            prompt.append(int(timings["cache_n"]) + int(timings["prompt_n"]))
        with service._OPENER.open(f"{svc.url}/metrics", timeout=30) as response:
            metrics = response.read().decode()
    return {
        "next_turn_ms": summary(next_turn, 1e3),
        "swap_away_ms": summary(away, 1e3),
        "swap_back_ms": summary(back, 1e3),
        "next_turn_prompt_tokens": median(prompt),
        "next_turn_cache_n": median(cached),
        "save_mean_ms": _summary_mean_ms(metrics, "llamaswap_warm_swap_save_seconds"),
        "restore_mean_ms": _summary_mean_ms(metrics, "llamaswap_warm_swap_restore_seconds"),
    }


def measure(install: LlamaInstall, workdir: Path, *, trials: int) -> dict[str, object]:
    """The same trials without and with warm swaps (ms)."""
    procs.pin_self(None)
    with tempfile.TemporaryDirectory(prefix="warm-caches-") as caches:
        cold = _run(install, workdir, Path(caches), warm=False, trials=trials)
        warm = _run(install, workdir, Path(caches), warm=True, trials=trials)
    off, on = cold["next_turn_ms"]["p50"], warm["next_turn_ms"]["p50"]  # type: ignore[index]
    save, restore = warm["save_mean_ms"], warm["restore_mean_ms"]
    return {
        "trials": trials,
        "without": cold,
        "with": warm,
        "next_turn_speedup": round(off / on, 1) if on else None,
        "added_to_swap_ms": None if save is None or restore is None else round(save + restore, 1),
    }
