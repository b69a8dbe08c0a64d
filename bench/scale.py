"""Scale: a wave of concurrent streaming clients spread over several models.

Every client opens its own connection and reads a paced stream to the end; a client fails
if it gets no 200, a short stream, no `[DONE]`, or an error. The same wave runs direct to
the upstreams (a baseline for the client and upstreams themselves) and through the service,
while the service's RSS is sampled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench import service
from bench.resources import RssSampler, cpu_seconds, rss_mb
from bench.stats import summary
from bench.stream import StreamTimes, read_stream


@dataclass
class Wave:
    """What one wave of clients saw."""

    clients: int
    seconds: float = 0.0
    failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    peak_open: int = 0
    times: StreamTimes = field(default_factory=StreamTimes)

    def report(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "failures": self.failures,
            "errors": dict(self.errors.most_common(5)),
            "seconds": round(self.seconds, 2),
            "peak_open_streams": self.peak_open,
            "ttfb_ms": summary(self.times.ttfb, 1e-6, 2),
            "chunk_delay_ms": summary(self.times.delays, 1e-6, 2),
        }


async def _wave(urls: list[tuple[str, str]], events: int, interval_us: int, timeout: float) -> Wave:
    """Run one client per (url, model) at once; count failures and the most streams open at once."""
    wave = Wave(len(urls))
    open_now = 0

    async def client(session: aiohttp.ClientSession, url: str, model: str) -> None:
        nonlocal open_now
        open_now += 1
        wave.peak_open = max(wave.peak_open, open_now)
        try:
            await read_stream(session, url, model, events, interval_us, wave.times, timeout=timeout)
        except Exception as error:  # every failure counts, whatever it is
            wave.failures += 1
            wave.errors[f"{type(error).__name__}: {str(error)[:120]}"] += 1
        finally:
            open_now -= 1

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        await asyncio.gather(*(client(session, url, model) for url, model in urls))
    wave.seconds = time.monotonic() - started
    return wave


async def measure(
    svc: service.Service,
    models: list[str],
    *,
    clients: int,
    events: int,
    interval_us: int,
    timeout: float = 120.0,
) -> dict[str, object]:
    """The same wave direct and through the service; the service's RSS and CPU while it ran."""
    picks = [models[index % len(models)] for index in range(clients)]
    direct_urls = [(f"http://127.0.0.1:{svc.models[m].port}/v1/chat/completions", m) for m in picks]
    proxied_urls = [(f"{svc.url}/v1/chat/completions", m) for m in picks]
    direct = await _wave(direct_urls, events, interval_us, timeout)
    before_rss = rss_mb(svc.proc)
    before_cpu = cpu_seconds(svc.proc)
    with RssSampler(svc.proc) as rss:
        proxied = await _wave(proxied_urls, events, interval_us, timeout)
    cpu = cpu_seconds(svc.proc) - before_cpu
    await asyncio.sleep(1.0)  # let the service drop its per-connection state
    return {
        "models": models,
        "events_per_stream": events,
        "interval_us": interval_us,
        "direct": direct.report(),
        "proxied": proxied.report(),
        "service_rss_before_mb": round(before_rss, 1),
        "service_rss_peak_mb": round(rss.peak_mb, 1),
        "service_rss_after_mb": round(rss_mb(svc.proc), 1),
        "service_cpu_s": round(cpu, 2),
        "service_cpu_us_per_chunk": round(cpu / max(1, clients * events) * 1e6, 1),
    }
