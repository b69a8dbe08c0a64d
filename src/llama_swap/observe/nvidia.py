"""NVIDIA GPUs through `nvidia-smi`: one bounded query per sample, and the CSV it prints.

The Go version keeps `nvidia-smi --loop` running and restarts it when it dies; a one-shot
query per sample needs no restart logic, cannot leave a stuck reader behind (it is killed at
its timeout), and costs the service only a process spawn every `performance.every`.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from datetime import datetime

NVIDIA_SMI = "nvidia-smi"
STAT_FIELDS = "index,name,uuid,temperature.gpu,utilization.gpu,memory.used,memory.total,fan.speed,power.draw"


class NvidiaSmiError(Exception):
    """nvidia-smi could not be run, failed, or did not answer in time."""


@dataclass(frozen=True)  # no __slots__: orjson encodes a __dict__ dataclass ~4x faster
class GpuStat:
    """One GPU in one sample; the field names are Go's `perf.GpuStat` JSON."""

    timestamp: datetime
    id: int
    name: str
    uuid: str
    temp_c: int
    vram_temp_c: int
    gpu_util_pct: float
    mem_util_pct: float
    mem_used_mb: int
    mem_total_mb: int
    fan_speed_pct: float
    power_draw_w: float


async def query(binary: str, fields: str, timeout: float) -> str:
    """`nvidia-smi --query-gpu=<fields>` as CSV without header or units; killed at ``timeout``
    (and when the caller is cancelled), so a hung driver never piles up processes."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, f"--query-gpu={fields}", "--format=csv,noheader,nounits",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NvidiaSmiError(f"cannot run {binary}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise NvidiaSmiError(f"{binary} did not answer within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        message = (err or out).decode("utf-8", "replace").strip().splitlines()
        raise NvidiaSmiError(f"{binary} exited with {proc.returncode}: {message[-1] if message else 'no output'}")
    return out.decode("utf-8", "replace")


def rows(text: str) -> list[list[str]]:
    """The CSV's non-empty rows, each cell stripped."""
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), skipinitialspace=True) if row]


def number(cell: str) -> float | None:
    """A value, or None for `N/A`, `[Not Supported]` and the like."""
    try:
        return float(cell)
    except ValueError:
        return None


def parse_gpu_stats(text: str, now: datetime) -> list[GpuStat]:
    """One `GpuStat` per row of a `STAT_FIELDS` query; a value the GPU does not report is 0,
    as in the Go version, and a short row is skipped."""
    stats = []
    for row in rows(text):
        if len(row) < 9:
            continue
        index, name, uuid, temp, util, used, total, fan, power = row[:9]
        used_mb, total_mb = int(number(used) or 0), int(number(total) or 0)
        stats.append(GpuStat(
            timestamp=now,
            id=int(number(index) or 0),
            name=name,
            uuid=uuid,
            temp_c=int(number(temp) or 0),
            vram_temp_c=0,  # nvidia-smi has no query field for it (the Go version leaves it 0 too)
            gpu_util_pct=number(util) or 0.0,
            mem_util_pct=round(100.0 * used_mb / total_mb, 2) if total_mb > 0 else 0.0,
            mem_used_mb=used_mb,
            mem_total_mb=total_mb,
            fan_speed_pct=number(fan) or 0.0,
            power_draw_w=number(power) or 0.0,
        ))
    return stats
