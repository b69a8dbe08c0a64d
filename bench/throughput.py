"""Non-streaming throughput and latency at 1 and 64 connections, direct vs through the service.

Direct, proxied and (optionally) floor wrk runs alternate (d, p, f, a, d, p, f, a, …); per
side the run with the median throughput is reported. The floor is bench/bare_proxy.py, the
thinnest proxy on the service's own stack, pinned like the service: the service's cost
above it is its own work. The ASGI floor (a) is bench/asgi_floor.py, the same forwarding on
uvicorn (uvloop + httptools) with a raw ASGI app, pinned alike: its cost against the floor's
is what the other server stack would save. CPU seconds of the service (and of each floor)
over each of their runs give the CPU cost per request, whichever side is the bottleneck.
"""

from __future__ import annotations

import psutil

from bench import service
from bench.load import WrkResult, chat_body, run_wrk
from bench.resources import RssSampler, cpu_seconds
from bench.stats import median


def _median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda run: run.rps)[len(runs) // 2]


def _timed_run(
    wrk: str, url: str, body: str, proc: psutil.Process, conns: int, seconds: float, cpus: set[int] | None
) -> tuple[WrkResult, float, float]:
    """One wrk run against a proxy: (result, the proxy's CPU µs per request, its peak RSS MiB)."""
    before = cpu_seconds(proc)
    with RssSampler(proc) as rss:
        run = run_wrk(wrk, url, body, connections=conns, seconds=seconds, cpus=cpus)
    used = cpu_seconds(proc) - before
    return run, (used / run.requests * 1e6 if run.requests else float("nan")), rss.peak_mb


def measure(
    wrk: str,
    svc: service.Service,
    model: str,
    *,
    seconds: float,
    reps: int,
    cpus: set[int] | None,
    floor: tuple[str, psutil.Process] | None = None,
    asgi_floor: tuple[str, psutil.Process] | None = None,
    connections: tuple[int, ...] = (1, 64),
) -> dict[str, object]:
    """wrk direct to `model`'s upstream, through the service and through the floors (url, process)."""
    body = chat_body(model)
    direct_url = f"http://127.0.0.1:{svc.models[model].port}/v1/chat/completions"
    proxied_url = f"{svc.url}/v1/chat/completions"
    floor_url = f"{floor[0]}/v1/chat/completions" if floor else None
    asgi_url = f"{asgi_floor[0]}/v1/chat/completions" if asgi_floor else None
    for url in (direct_url, proxied_url, floor_url, asgi_url):  # warm-up: connections, pools, caches
        if url:
            run_wrk(wrk, url, body, connections=max(connections), seconds=1, cpus=cpus)
    results: dict[str, object] = {"seconds": seconds, "reps": reps}
    for conns in connections:
        direct: list[WrkResult] = []
        proxied: list[WrkResult] = []
        floors: list[WrkResult] = []
        cpu_us: list[float] = []
        floor_cpu_us: list[float] = []
        asgi: list[WrkResult] = []
        asgi_cpu_us: list[float] = []
        peak_rss = 0.0
        for _ in range(reps):
            direct.append(run_wrk(wrk, direct_url, body, connections=conns, seconds=seconds, cpus=cpus))
            run, cpu, rss = _timed_run(wrk, proxied_url, body, svc.proc, conns, seconds, cpus)
            proxied.append(run)
            cpu_us.append(cpu)
            peak_rss = max(peak_rss, rss)
            if floor and floor_url:
                run, cpu, _ = _timed_run(wrk, floor_url, body, floor[1], conns, seconds, cpus)
                floors.append(run)
                floor_cpu_us.append(cpu)
            if asgi_floor and asgi_url:
                run, cpu, _ = _timed_run(wrk, asgi_url, body, asgi_floor[1], conns, seconds, cpus)
                asgi.append(run)
                asgi_cpu_us.append(cpu)
        d, p = _median_run(direct), _median_run(proxied)
        cpu = median(cpu_us)
        entry: dict[str, object] = {
            "connections": conns,
            "direct": d.as_dict(),
            "proxied": p.as_dict(),
            "rps_ratio": round(p.rps / d.rps, 3) if d.rps else None,
            "added_p50_us": p.p50_us - d.p50_us,
            "added_p99_us": p.p99_us - d.p99_us,
            "proxied_errors": sum(run.errors for run in proxied),
            "service_cpu_us_per_request": round(cpu, 1),
            "service_cpu_s_per_10k_requests": round(cpu / 100, 3),
            "service_peak_rss_mb": round(peak_rss, 1),
        }
        if floors:
            entry.update(_floor_entry("floor", floors, floor_cpu_us, d))
            entry["service_cpu_vs_floor"] = round(cpu / median(floor_cpu_us), 2)
        if asgi:
            entry.update(_floor_entry("asgi_floor", asgi, asgi_cpu_us, d))
            if floors:
                entry["asgi_floor_vs_floor_cpu"] = round(median(asgi_cpu_us) / median(floor_cpu_us), 3)
        results[f"c{conns}"] = entry
    return results


def _floor_entry(key: str, runs: list[WrkResult], cpu_us: list[float], direct: WrkResult) -> dict[str, object]:
    """One floor's figures in a throughput entry, its keys prefixed with ``key``."""
    median_run = _median_run(runs)
    return {
        key: median_run.as_dict(),
        f"{key}_added_p50_us": median_run.p50_us - direct.p50_us,
        f"{key}_cpu_us_per_request": round(median(cpu_us), 1),
        f"{key}_errors": sum(run.errors for run in runs),
    }
