"""One system sample (CPU, memory, swap, load, network) read from /proc, in the Go version's shape.

Four small files are read with plain synchronous reads (~100 µs in all, docs/performance.md):
cheaper than a thread hop, and the project already reads /proc for the models' memory. The
parsers are pure functions of the files' text, so they are tested with recorded text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

MIB = 1024 * 1024
CpuTimes = list[tuple[int, int]]  # (busy, total) jiffies: the whole machine, then each core


@dataclass(frozen=True)
class NetIO:
    """Bytes through one network interface since boot (a counter)."""

    name: str
    bytes_recv: int
    bytes_sent: int


@dataclass(frozen=True)  # no __slots__: orjson encodes a __dict__ dataclass ~4x faster
class SysStat:
    """One sample; the field names are Go's `perf.SysStat` JSON, plus `cpu_util_total`."""

    timestamp: datetime
    cpu_util_per_core: list[float]
    cpu_util_total: float
    mem_total_mb: int
    mem_used_mb: int
    mem_free_mb: int
    swap_total_mb: int
    swap_used_mb: int
    load_avg_1: float
    load_avg_5: float
    load_avg_15: float
    net_io: list[NetIO]


def parse_cpu_times(stat: str) -> CpuTimes:
    """The `cpu` lines of /proc/stat. Busy is everything but idle and iowait, as gopsutil
    counts it; guest time is already inside user time, so it is not added again."""
    times: CpuTimes = []
    for line in stat.splitlines():
        if not line.startswith("cpu"):
            break  # the cpu lines come first
        values = [int(v) for v in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
        total = sum(values)
        times.append((total - values[3] - values[4], total))
    return times


def utilisation(before: CpuTimes, after: CpuTimes) -> list[float]:
    """Percent busy between two readings, per entry. Without a comparable earlier reading
    (the first sample, or CPUs came or went) the average since boot is what there is."""
    if len(before) != len(after):
        before = [(0, 0)] * len(after)
    return [_percent(b1, t1, b2, t2) for (b1, t1), (b2, t2) in zip(before, after)]


def _percent(busy1: int, total1: int, busy2: int, total2: int) -> float:
    elapsed = total2 - total1
    if elapsed <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * (busy2 - busy1) / elapsed)), 2)


def parse_meminfo(meminfo: str) -> dict[str, int]:
    """/proc/meminfo as bytes by field name."""
    fields: dict[str, int] = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if len(parts) > 1 else 1)  # "kB", or a page count
    return fields


def memory_mb(mem: dict[str, int]) -> tuple[int, int, int, int, int]:
    """(total, used, free, swap total, swap used) in MiB. Used is gopsutil's: total minus
    free, buffers and page cache (reclaimable slab included)."""
    total, free = mem.get("MemTotal", 0), mem.get("MemFree", 0)
    used = total - free - mem.get("Buffers", 0) - mem.get("Cached", 0) - mem.get("SReclaimable", 0)
    if used < 0:
        used = total - free
    swap_total = mem.get("SwapTotal", 0)
    swap_used = swap_total - mem.get("SwapFree", 0)
    return total // MIB, used // MIB, free // MIB, swap_total // MIB, swap_used // MIB


def parse_loadavg(loadavg: str) -> tuple[float, float, float]:
    one, five, fifteen = loadavg.split()[:3]
    return float(one), float(five), float(fifteen)


def parse_net_dev(net_dev: str) -> list[NetIO]:
    """Every interface but loopback, as the Go version reports them."""
    interfaces = []
    for line in net_dev.splitlines()[2:]:  # two header lines
        name, _, counters = line.partition(":")
        name, values = name.strip(), counters.split()
        if name and name != "lo" and len(values) >= 9:
            interfaces.append(NetIO(name, int(values[0]), int(values[8])))
    return interfaces


class SystemReader:
    """Takes samples; keeps the previous CPU times, since utilisation is a difference."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._cpu: CpuTimes = []

    def read(self, now: datetime) -> SysStat:
        """A sample at ``now``; OSError when /proc cannot be read (not Linux)."""
        cpu = parse_cpu_times(self._text("stat"))
        util, self._cpu = utilisation(self._cpu, cpu), cpu
        total, used, free, swap_total, swap_used = memory_mb(parse_meminfo(self._text("meminfo")))
        load1, load5, load15 = parse_loadavg(self._text("loadavg"))
        return SysStat(
            timestamp=now,
            cpu_util_per_core=util[1:],
            cpu_util_total=util[0] if util else 0.0,
            mem_total_mb=total,
            mem_used_mb=used,
            mem_free_mb=free,
            swap_total_mb=swap_total,
            swap_used_mb=swap_used,
            load_avg_1=load1,
            load_avg_5=load5,
            load_avg_15=load15,
            net_io=parse_net_dev(self._text("net/dev")),
        )

    def _text(self, name: str) -> str:
        with open(self._proc / name, "rb") as file:
            return file.read().decode("ascii", "replace")
