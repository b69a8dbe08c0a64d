"""The results table (Markdown, readable in a terminal) and the targets' pass/fail marks."""

from __future__ import annotations

import math
from typing import Any

from bench import reference as ref

Row = tuple[str, str, str, str, str, str, str]
HEADER: Row = ("figure", "direct", "llama-swap (py)", "ratio / added", ref.GO_LABEL, "target", "")


def get(results: dict[str, Any], path: str) -> Any:
    """`results["a"]["b"]…` for "a.b…", or None when any part is missing."""
    node: Any = results
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def fmt(value: Any, digits: int = 0, sign: bool = False) -> str:
    """A number with thousands separators (and a sign for differences); '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:{'+' if sign else ''},.{digits}f}"


def _ratio(value: Any) -> str:
    return "–" if value is None else f"×{value:.2f}"


def mark(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "–"}[passed]


def _check(value: Any, ok: bool) -> bool | None:
    return None if value is None else ok


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #6 with the measured value and pass/fail (None: not measured)."""
    rps64 = get(r, "throughput.c64.proxied.rps")
    added_c1 = get(r, "throughput.c1.added_p50_us")
    chunk = get(r, "stream.added.chunk_delay_p50_us")
    ttfb = get(r, "stream.added.ttfb_p50_us")
    cold_share = get(r, "swap.cold.service_share_ms")
    swap_share = get(r, "swap.swap.service_share_ms")
    swap_ms = get(r, "swap.swap_first_byte_ms.p50")
    idle = get(r, "memory.idle_rss_mb")
    swap_failures = get(r, "swap.failed_requests")
    clients = get(r, "scale.proxied.clients")
    failures = get(r, "scale.proxied.failures")
    scale_ok = None if failures is None else failures == 0 and clients >= ref.TARGET_SCALE_CLIENTS
    warm_speedup = get(r, "warm.next_turn_speedup")
    warm_added = get(r, "warm.added_to_swap_ms")
    return [
        {"id": "rps_c64", "target": "≥ 7,000 req/s at 64 connections", "value": rps64,
         "pass": _check(rps64, rps64 is not None and rps64 >= ref.TARGET_RPS_C64)},
        {"id": "rps_c64_vs_go", "target": "≥ 1.5x the Go version's req/s at 64 connections (vs 5,100)",
         "value": None if rps64 is None else round(rps64 / ref.GO_RPS_C64_HIGH, 2),
         "pass": _check(rps64, rps64 is not None and rps64 >= ref.TARGET_RPS_C64_VS_GO * ref.GO_RPS_C64_HIGH)},
        {"id": "added_p50_c1", "target": "≤ 0.25 ms added p50 latency at 1 connection", "value": added_c1,
         "pass": _check(added_c1, added_c1 is not None and added_c1 <= ref.TARGET_ADDED_P50_C1_US)},
        {"id": "chunk_p50", "target": "added per-chunk delay p50 ≤ 0.1 ms", "value": chunk,
         "pass": _check(chunk, chunk is not None and chunk <= ref.TARGET_ADDED_CHUNK_P50_US)},
        {"id": "ttfb_p50", "target": "added time to first byte p50 ≤ 0.5 ms", "value": ttfb,
         "pass": _check(ttfb, ttfb is not None and ttfb <= ref.TARGET_ADDED_TTFB_P50_US)},
        {"id": "cold_start", "target": "a cold start adds ≤ 50 ms to llama-server's own start (service's share)",
         "value": cold_share,
         "pass": _check(cold_share, cold_share is not None and cold_share <= ref.TARGET_SWAP_ADDED_MS)},
        {"id": "swap_share", "target": "an A/B swap adds ≤ 50 ms to llama-server's own start (service's share)",
         "value": swap_share,
         "pass": _check(swap_share, swap_share is not None and swap_share <= ref.TARGET_SWAP_ADDED_MS)},
        {"id": "swap_vs_go", "target": "A/B swap ≥ 3x faster than the Go version (vs 1,500 ms)",
         "value": None if not swap_ms else round(ref.GO_SWAP_MS_LOW / swap_ms, 2),
         "pass": _check(swap_ms, bool(swap_ms) and ref.GO_SWAP_MS_LOW / swap_ms >= ref.TARGET_SWAP_VS_GO)},
        {"id": "swap_failures", "target": "no failed request in the swap part (not an issue target)",
         "value": swap_failures, "pass": _check(swap_failures, swap_failures == 0)},
        {"id": "idle_rss", "target": "idle RSS ≤ 60 MB", "value": idle,
         "pass": _check(idle, idle is not None and idle <= ref.TARGET_IDLE_RSS_MB)},
        {"id": "scale", "target": "1,000 concurrent streams, zero errors", "value": failures, "pass": scale_ok},
        {"id": "warm_next_turn", "target": "warm swaps: next turn of a 2k-token conversation ≥ 10x faster",
         "value": warm_speedup,
         "pass": _check(warm_speedup, warm_speedup is not None and warm_speedup >= ref.TARGET_WARM_SPEEDUP)},
        {"id": "warm_added", "target": "warm swaps add ≤ 50 ms to a swap (save + restore)", "value": warm_added,
         "pass": _check(warm_added, warm_added is not None and warm_added <= ref.TARGET_WARM_ADDED_MS)},
    ]  # fmt: skip


def rows(r: dict[str, Any]) -> list[Row]:
    """The table's rows from a results dict (missing parts show '–')."""
    t = {item["id"]: item["pass"] for item in targets(r)}
    out: list[Row] = []
    for conns in (1, 64):
        base = f"throughput.c{conns}"
        out.append(
            (
                f"req/s, {conns} conn{'s' if conns > 1 else ''} (non-streaming)",
                fmt(get(r, f"{base}.direct.rps")),
                fmt(get(r, f"{base}.proxied.rps")),
                _ratio(get(r, f"{base}.rps_ratio")),
                ref.GO[f"rps_c{conns}"],
                "≥ 7,000" if conns == 64 else "",
                mark(t["rps_c64"]) if conns == 64 else "",
            )
        )
        out.append(
            (
                f"latency p50 µs, {conns} conn{'s' if conns > 1 else ''}",
                fmt(get(r, f"{base}.direct.p50_us")),
                fmt(get(r, f"{base}.proxied.p50_us")),
                fmt(get(r, f"{base}.added_p50_us"), sign=True),
                ref.GO["added_p50_c1_us"] if conns == 1 else "",
                "≤ +250" if conns == 1 else "",
                mark(t["added_p50_c1"]) if conns == 1 else "",
            )
        )
        out.append(
            (
                f"latency p99 µs, {conns} conn{'s' if conns > 1 else ''}",
                fmt(get(r, f"{base}.direct.p99_us")),
                fmt(get(r, f"{base}.proxied.p99_us")),
                fmt(get(r, f"{base}.added_p99_us"), sign=True),
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"wrk errors (all runs), {conns} conn{'s' if conns > 1 else ''}",
                fmt(get(r, f"{base}.direct.errors")),
                fmt(get(r, f"{base}.proxied_errors")),
                "",
                "",
                "0",
                "",
            )
        )
        out.append(
            (
                f"floor (bare aiohttp proxy): req/s / p50 µs, {conns} conn{'s' if conns > 1 else ''}",
                "",
                f"{fmt(get(r, f'{base}.floor.rps'))} / {fmt(get(r, f'{base}.floor.p50_us'))}",
                fmt(get(r, f"{base}.floor_added_p50_us"), sign=True),
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"CPU µs per request: service / floor, {conns} conn{'s' if conns > 1 else ''}",
                "",
                f"{fmt(get(r, f'{base}.service_cpu_us_per_request'))} / {fmt(get(r, f'{base}.floor_cpu_us_per_request'))}",
                _ratio(get(r, f"{base}.service_cpu_vs_floor")),
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"ASGI floor (uvicorn raw ASGI proxy): req/s / p50 µs, {conns} conn{'s' if conns > 1 else ''}",
                "",
                f"{fmt(get(r, f'{base}.asgi_floor.rps'))} / {fmt(get(r, f'{base}.asgi_floor.p50_us'))}",
                fmt(get(r, f"{base}.asgi_floor_added_p50_us"), sign=True),
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"CPU µs per request: floor / ASGI floor, {conns} conn{'s' if conns > 1 else ''}",
                "",
                f"{fmt(get(r, f'{base}.floor_cpu_us_per_request'))} / "
                f"{fmt(get(r, f'{base}.asgi_floor_cpu_us_per_request'))}",
                _ratio(get(r, f"{base}.asgi_floor_vs_floor_cpu")),
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"service CPU s per 10k requests, {conns} conn{'s' if conns > 1 else ''}",
                "",
                fmt(get(r, f"{base}.service_cpu_s_per_10k_requests"), 2),
                "",
                "2.85 (285 µs/req, stack notes)" if conns == 64 else "",
                "",
                "",
            )
        )
    out += [
        ("stream TTFB p50 µs", fmt(get(r, "stream.direct.ttfb_us.p50")), fmt(get(r, "stream.proxied.ttfb_us.p50")),
         fmt(get(r, "stream.added.ttfb_p50_us"), sign=True), "", "≤ +500",
         mark(t["ttfb_p50"])),
        ("stream TTFB p99 µs", fmt(get(r, "stream.direct.ttfb_us.p99")), fmt(get(r, "stream.proxied.ttfb_us.p99")),
         fmt(get(r, "stream.added.ttfb_p99_us"), sign=True), "", "", ""),
        ("per-chunk delay p50 µs (1,000 events)", fmt(get(r, "stream.direct.chunk_delay_us.p50")),
         fmt(get(r, "stream.proxied.chunk_delay_us.p50")), fmt(get(r, "stream.added.chunk_delay_p50_us"), sign=True),
         ref.GO["added_chunk_p50_us"], "≤ +100", mark(t["chunk_p50"])),
        ("per-chunk delay p99 µs", fmt(get(r, "stream.direct.chunk_delay_us.p99")),
         fmt(get(r, "stream.proxied.chunk_delay_us.p99")), fmt(get(r, "stream.added.chunk_delay_p99_us"), sign=True),
         "", "", ""),
        ("inter-chunk gap p50 / p99 µs",
         f"{fmt(get(r, 'stream.direct.chunk_gap_us.p50'))} / {fmt(get(r, 'stream.direct.chunk_gap_us.p99'))}",
         f"{fmt(get(r, 'stream.proxied.chunk_gap_us.p50'))} / {fmt(get(r, 'stream.proxied.chunk_gap_us.p99'))}",
         "", "", "", ""),
        ("llama-server direct: spawn → listening / → healthy p50 ms", "",
         f"{fmt(get(r, 'swap.direct_start_to_listening_ms.p50'), 1)} / "
         f"{fmt(get(r, 'swap.direct_start_to_healthy_ms.p50'), 1)}", "", ref.GO["llama_healthy_ms"] + " (healthy)",
         "", ""),
        ("warm request → first byte p50 ms (llama-server's own answer time)", "",
         fmt(get(r, "swap.warm_first_byte_ms.p50"), 1), "", "", "", ""),
        ("cold start → first byte p50 ms", fmt(get(r, "swap.direct_start_to_healthy_ms.p50"), 1),
         fmt(get(r, "swap.cold_first_byte_ms.p50"), 1), fmt(get(r, "swap.cold_added_ms"), 1, sign=True),
         "+0–1,000 (polls 250 ms, then 1 s)", "", ""),
        ("cold start: service's share ms (before listening + healthy → first byte)", "",
         f"{fmt(get(r, 'swap.cold.added_before_listening_ms'), 1, sign=True)} "
         f"{fmt(get(r, 'swap.cold.healthy_to_first_byte_ms.p50'), 1, sign=True)}",
         fmt(get(r, "swap.cold.service_share_ms"), 1, sign=True), "", "≤ +50", mark(t["cold_start"])),
        ("A/B swap → first byte p50 ms", fmt(get(r, "swap.direct_start_to_healthy_ms.p50"), 1),
         fmt(get(r, "swap.swap_first_byte_ms.p50"), 1), fmt(get(r, "swap.swap_added_ms"), 1, sign=True),
         ref.GO["swap_ms"], "≥ 3x faster than Go", mark(t["swap_vs_go"])),
        ("A/B swap: service's share ms (before listening + healthy → first byte)", "",
         f"{fmt(get(r, 'swap.swap.added_before_listening_ms'), 1, sign=True)} "
         f"{fmt(get(r, 'swap.swap.healthy_to_first_byte_ms.p50'), 1, sign=True)}",
         fmt(get(r, "swap.swap.service_share_ms"), 1, sign=True), "", "≤ +50", mark(t["swap_share"])),
        ("swap part: failed requests (cold, warm, A/B)", "", fmt(get(r, "swap.failed_requests")), "", "", "0",
         mark(t["swap_failures"])),
        (f"scale: {fmt(get(r, 'scale.proxied.clients'))} concurrent streams, failures",
         fmt(get(r, "scale.direct.failures")), fmt(get(r, "scale.proxied.failures")), "", "", "0",
         mark(t["scale"])),
        ("scale: peak open streams / wave seconds",
         f"{fmt(get(r, 'scale.direct.peak_open_streams'))} / {fmt(get(r, 'scale.direct.seconds'), 1)}",
         f"{fmt(get(r, 'scale.proxied.peak_open_streams'))} / {fmt(get(r, 'scale.proxied.seconds'), 1)}",
         "", "", "", ""),
        ("warm swaps: next turn after a swap away and back, p50 ms (without / with)",
         fmt(get(r, "warm.without.next_turn_ms.p50"), 1), fmt(get(r, "warm.with.next_turn_ms.p50"), 1),
         _ratio(get(r, "warm.next_turn_speedup")), "", "≥ 10x", mark(t["warm_next_turn"])),
        ("warm swaps: cache_n / prompt tokens of the next turn (with)", "",
         f"{fmt(get(r, 'warm.with.next_turn_cache_n'))} / {fmt(get(r, 'warm.with.next_turn_prompt_tokens'))}",
         "", "", "", ""),
        ("warm swaps: save + restore ms per swap", "",
         f"{fmt(get(r, 'warm.with.save_mean_ms'), 1)} + {fmt(get(r, 'warm.with.restore_mean_ms'), 1)}",
         fmt(get(r, "warm.added_to_swap_ms"), 1, sign=True), "", "≤ +50", mark(t["warm_added"])),
        ("warm swaps: swap away / back p50 ms (without → with)", "",
         f"{fmt(get(r, 'warm.without.swap_away_ms.p50'), 1)} → {fmt(get(r, 'warm.with.swap_away_ms.p50'), 1)} / "
         f"{fmt(get(r, 'warm.without.swap_back_ms.p50'), 1)} → {fmt(get(r, 'warm.with.swap_back_ms.p50'), 1)}",
         "", "", "", ""),
        ("service RSS MB: idle", "", fmt(get(r, "memory.idle_rss_mb"), 1), "", "", "≤ 60",
         mark(t["idle_rss"])),
        ("service RSS MB: peak with 1,000 streams / after", "",
         f"{fmt(get(r, 'scale.service_rss_peak_mb'), 1)} / {fmt(get(r, 'memory.final_rss_mb'), 1)}", "", "", "", ""),
    ]  # fmt: skip
    return out


def table(r: dict[str, Any]) -> str:
    """A Markdown table of every figure, padded so it also reads well in a terminal."""
    body = [HEADER, *rows(r)]
    widths = [max(len(row[i]) for row in body) for i in range(len(HEADER))]

    def line(row: Row) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(HEADER), rule, *(line(row) for row in body[1:])])
