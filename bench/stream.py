"""Streaming timing: time to first byte and per-chunk delay, direct vs through the service.

The bench upstream stamps every SSE event with its `time.monotonic_ns()` when written; the
client notes when each event arrives. Per event, `arrival - stamp` is the one-way delay
(network + proxy + client parsing), so `proxied - direct` is what the proxy adds to each
chunk. The gaps between arrivals are reported too (jitter: a proxy that batches chunks
shows up as gaps of 0 then large ones). Direct and proxied streams alternate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from bench.load import chat_body
from bench.stats import summary

STAMP = b'"t":'


class StreamError(RuntimeError):
    """A stream did not complete as expected."""


@dataclass
class StreamTimes:
    """Arrival times of one or more streams, in ns."""

    ttfb: list[int] = field(default_factory=list)
    delays: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)

    def report(self) -> dict[str, dict[str, float]]:
        """Summaries in µs."""
        return {
            "ttfb_us": summary(self.ttfb, 1e-3),
            "chunk_delay_us": summary(self.delays, 1e-3),
            "chunk_gap_us": summary(self.gaps, 1e-3),
        }


async def read_stream(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    events: int,
    interval_us: int,
    into: StreamTimes | None,
    timeout: float = 60.0,
) -> int:
    """POST a streaming chat request, time its events into `into`; returns the events seen."""
    body = chat_body(model, stream=True, max_tokens=events, bench_interval_us=interval_us)
    pending = bytearray()
    seen = 0
    done = False
    previous = 0
    started = time.monotonic_ns()
    async with asyncio.timeout(timeout):
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            if response.status != 200:
                raise StreamError(f"{url} answered {response.status}: {(await response.read())[:200]!r}")
            async for data in response.content.iter_any():
                now = time.monotonic_ns()
                pending += data
                while (end := pending.find(b"\n\n")) >= 0:
                    event = bytes(pending[:end])
                    del pending[: end + 2]
                    at = event.rfind(STAMP)
                    if at < 0:
                        done = done or event.endswith(b"[DONE]")
                        continue
                    stamp = int(event[at + len(STAMP) : event.index(b"}", at)])
                    if into is not None:
                        if seen == 0:
                            into.ttfb.append(now - started)
                        else:
                            into.gaps.append(now - previous)
                        into.delays.append(now - stamp)
                    previous = now
                    seen += 1
    if seen != events or not done:
        raise StreamError(f"{url}: {seen}/{events} events, [DONE] {'seen' if done else 'missing'}")
    return seen


async def measure(
    direct_url: str,
    proxied_url: str,
    model: str,
    *,
    streams: int,
    events: int,
    interval_us: int,
    ttfb_trials: int,
) -> dict[str, object]:
    """Alternate direct and proxied streams; returns both sides' summaries and the differences."""
    direct, proxied = StreamTimes(), StreamTimes()
    direct_ttfb, proxied_ttfb = StreamTimes(), StreamTimes()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        for url in (direct_url, proxied_url):  # warm-up: connections, the proxy's pool
            for _ in range(5):
                await read_stream(session, url, model, 20, 0, None)
        for _ in range(ttfb_trials):
            await read_stream(session, direct_url, model, 1, 0, direct_ttfb)
            await read_stream(session, proxied_url, model, 1, 0, proxied_ttfb)
        for _ in range(streams):
            await read_stream(session, direct_url, model, events, interval_us, direct)
            await read_stream(session, proxied_url, model, events, interval_us, proxied)
    direct_report, proxied_report = direct.report(), proxied.report()
    direct_report["ttfb_us"] = direct_ttfb.report()["ttfb_us"]
    proxied_report["ttfb_us"] = proxied_ttfb.report()["ttfb_us"]
    return {
        "streams": streams,
        "events": events,
        "interval_us": interval_us,
        "ttfb_trials": ttfb_trials,
        "direct": direct_report,
        "proxied": proxied_report,
        "added": {
            "ttfb_p50_us": _diff(proxied_report, direct_report, "ttfb_us", "p50"),
            "ttfb_p99_us": _diff(proxied_report, direct_report, "ttfb_us", "p99"),
            "chunk_delay_p50_us": _diff(proxied_report, direct_report, "chunk_delay_us", "p50"),
            "chunk_delay_p99_us": _diff(proxied_report, direct_report, "chunk_delay_us", "p99"),
        },
    }


def _diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], key: str, pct: str) -> float:
    return round(a[key][pct] - b[key][pct], 1)
