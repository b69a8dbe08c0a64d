"""The whole benchmark: start everything, run each part, print the table, write the JSON.

Usage: `.venv/bin/python -m bench [--quick] [--no-llama] [--only PART …] [--out FILE]`
(or `bench/run …`). Parts: throughput, stream, scale (fake bench upstreams), swap and warm
(the real llama-server). A part that fails is recorded under `errors` and the others still run;
the exit status is 1 if any part failed, 2 if the bench could not start at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import procs, report, scale, service, stream, swap, throughput, warm
from bench.load import WrkMissing, ensure_wrk
from bench.resources import rss_mb

PARTS = ("throughput", "stream", "scale", "swap", "warm")
LLAMA_PARTS = {"swap", "warm"}  # the parts that run the real llama-server
RESULTS = procs.REPO / "bench" / "results"
SCALE_MODELS = 4
BARE_PROXY = procs.REPO / "bench" / "bare_proxy.py"
ASGI_FLOOR = procs.REPO / "bench" / "asgi_floor.py"
ASGI_MODULES = ("uvicorn", "httptools", "uvloop")  # the ASGI floor's stack: `pip install -e '.[bench]'`


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    wrk_seconds: float
    wrk_reps: int
    ttfb_trials: int
    streams: int
    stream_events: int
    stream_interval_us: int
    scale_clients: int
    scale_events: int
    scale_interval_us: int
    swap_trials: int
    swap_swaps: int
    swap_budget: float
    warm_trials: int


QUICK = Plan(
    wrk_seconds=3, wrk_reps=1, ttfb_trials=100, streams=3, stream_events=1000, stream_interval_us=1000,
    scale_clients=1000, scale_events=50, scale_interval_us=20_000, swap_trials=4, swap_swaps=4, swap_budget=40,
    warm_trials=2,
)  # fmt: skip
FULL = Plan(
    wrk_seconds=10, wrk_reps=3, ttfb_trials=400, streams=15, stream_events=1000, stream_interval_us=1000,
    scale_clients=1000, scale_events=100, scale_interval_us=20_000, swap_trials=12, swap_swaps=12, swap_budget=150,
    warm_trials=4,
)  # fmt: skip


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _part(results: dict[str, Any], name: str, job: Callable[[], Any]) -> None:
    """Run one part, storing its result or its error; progress on stderr."""
    print(f"bench: {name} …", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        results[name] = job()
    except Exception as error:  # one broken part must not lose the others' figures
        results.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    print(f"bench: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def run_fake_parts(
    results: dict[str, Any], parts: set[str], plan: Plan, workdir: Path, install_wrk: bool, pin: bool
) -> None:
    """Throughput, streaming and scale against one service fronting (pinned) bench upstreams."""
    wrk = ensure_wrk(install_wrk) if "throughput" in parts else ""
    service_cpus, other_cpus = procs.cpu_layout() if pin else (None, None)
    procs.pin_self(other_cpus)
    ports = procs.free_ports(SCALE_MODELS)
    models = [service.fake_model("bench" if i == 0 else f"bench-{i}", port, other_cpus) for i, port in enumerate(ports)]
    with contextlib.ExitStack() as stack:
        svc = stack.enter_context(service.start(workdir, models, together=True, cpus=service_cpus))
        memory: dict[str, Any] = {"fresh_rss_mb": round(rss_mb(svc.proc), 1)}
        results["memory"] = memory
        for model in models:
            svc.load(model.id)
        time.sleep(1.0)
        memory["idle_rss_mb"] = round(rss_mb(svc.proc), 1)
        floor = stack.enter_context(start_floor(ports[0], service_cpus, workdir)) if "throughput" in parts else None
        asgi = None
        if "throughput" in parts:
            missing = [name for name in ASGI_MODULES if importlib.util.find_spec(name) is None]
            if missing:
                print(
                    f"bench: no ASGI floor ({', '.join(missing)} missing: pip install -e '.[bench]')", file=sys.stderr
                )
            else:
                asgi = stack.enter_context(start_floor(ports[0], service_cpus, workdir, script=ASGI_FLOOR))
        if "throughput" in parts:
            _part(results, "throughput", lambda: throughput.measure(
                wrk, svc, "bench", seconds=plan.wrk_seconds, reps=plan.wrk_reps, cpus=other_cpus, floor=floor,
                asgi_floor=asgi))  # fmt: skip
        if "stream" in parts:
            _part(results, "stream", lambda: run_async(stream.measure(
                f"http://127.0.0.1:{svc.models['bench'].port}/v1/chat/completions",
                f"{svc.url}/v1/chat/completions", "bench",
                streams=plan.streams, events=plan.stream_events, interval_us=plan.stream_interval_us,
                ttfb_trials=plan.ttfb_trials)))  # fmt: skip
        if "scale" in parts:
            _part(results, "scale", lambda: run_async(scale.measure(
                svc, [m.id for m in models], clients=plan.scale_clients, events=plan.scale_events,
                interval_us=plan.scale_interval_us)))  # fmt: skip
        memory["final_rss_mb"] = round(rss_mb(svc.proc), 1)
    procs.pin_self(None)


@contextlib.contextmanager
def start_floor(
    upstream_port: int, cpus: set[int] | None, workdir: Path, script: Path = BARE_PROXY
) -> Iterator[tuple[str, psutil.Process]]:
    """A floor (bench/bare_proxy.py or bench/asgi_floor.py) in front of the bench upstream, pinned like the
    service: (url, process)."""
    port = procs.free_port()
    proc = procs.spawn(
        [procs.PYTHON, str(script), "--port", str(port), "--upstream", f"http://127.0.0.1:{upstream_port}"],
        cpus=cpus,
        log=workdir / f"{script.stem.replace('_', '-')}.log",
    )
    with procs.running(proc):
        procs.wait_healthy("127.0.0.1", port, "/health", timeout=30, poll=0.02, proc=proc)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid)


def run_swap_part(results: dict[str, Any], plan: Plan, workdir: Path) -> None:
    """Cold starts and A/B swaps with the real llama-server."""

    def job() -> dict[str, object]:
        install = swap.setup_llama()
        return swap.measure(install, workdir, trials=plan.swap_trials, swaps=plan.swap_swaps, budget=plan.swap_budget)

    _part(results, "swap", job)


def run_warm_part(results: dict[str, Any], plan: Plan, workdir: Path) -> None:
    """The next turn of a long conversation after a swap away and back, with and without warm swaps."""

    def job() -> dict[str, object]:
        return warm.measure(swap.setup_llama(), workdir, trials=plan.warm_trials)

    _part(results, "warm", job)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="llama-swap benchmark suite (issue #6)")
    parser.add_argument("--quick", action="store_true", help="short runs (~1–2 min) instead of the full ones")
    parser.add_argument("--no-llama", action="store_true", help="skip the swap and warm parts (real llama-server)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON results file")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the service and the load to cores")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install wrk when missing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or PARTS) - (LLAMA_PARTS if args.no_llama else set())
    plan = QUICK if args.quick else FULL
    workdir = RESULTS / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.iterdir():
        old.unlink()
    procs.exit_on_sigterm()
    procs.raise_fd_limit()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "parts": sorted(parts),
            "plan": dataclasses.asdict(plan),
            "cpus": len(os.sched_getaffinity(0)),
            "cpu_layout": "unpinned (--no-pin)"
            if args.no_pin
            else "service on core 0; upstreams, wrk and clients on core 1"
            if procs.cpu_layout()[0]
            else "unpinned (fewer than 2 cores)",
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    }
    started = time.monotonic()
    try:
        if parts & {"throughput", "stream", "scale"}:
            try:
                run_fake_parts(results, parts, plan, workdir, install_wrk=not args.no_install, pin=not args.no_pin)
            except WrkMissing:
                raise
            except Exception as error:
                results.setdefault("errors", {})["setup"] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
        if "swap" in parts:
            run_swap_part(results, plan, workdir)
        if "warm" in parts:
            run_warm_part(results, plan, workdir)
    except WrkMissing as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = report.targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(report.table(results))
    print()
    for item in results["targets"]:
        print(f"  {report.mark(item['pass']):4}  {item['target']}  (measured: {report.fmt(item['value'], 2)})")
    for name, error in results.get("errors", {}).items():
        print(f"  ERROR in {name}: {error}")
    print(f"\nbench: {results['meta']['seconds']} s; results in {args.out}; logs in {workdir}")
    return 1 if results.get("errors") else 0
