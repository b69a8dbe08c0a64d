"""The `performance` sampler's parts: /proc and nvidia-smi parsing from recorded text, the
one-hour rings and the `after` filter, the Prometheus families, and reconfiguration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from llama_swap.config import PerformanceConfig
from llama_swap.observe.nvidia import parse_gpu_stats
from llama_swap.observe.perf_metrics import SystemCollector
from llama_swap.observe.performance import PerformanceMonitor, Samples, capacity
from llama_swap.observe.system import (
    NetIO,
    SysStat,
    SystemReader,
    memory_mb,
    parse_cpu_times,
    parse_loadavg,
    parse_meminfo,
    parse_net_dev,
    utilisation,
)

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)

PROC_STAT = """\
cpu  820595 1636 136541 10290524 2773 0 42974 7497 0 0
cpu0 385306 943 56997 5183754 419 0 23420 2878 0 0
cpu1 435289 693 79544 5106769 2353 0 19554 4618 0 0
intr 123 0 0
ctxt 456
"""
PROC_STAT_LATER = """\
cpu  820795 1636 136541 10290724 2773 0 42974 7497 0 0
cpu0 385306 943 56997 5183854 419 0 23420 2878 0 0
cpu1 435489 693 79544 5106869 2353 0 19554 4618 0 0
"""
MEMINFO = """\
MemTotal:       24684852 kB
MemFree:        22384280 kB
MemAvailable:   23510044 kB
Buffers:           94372 kB
Cached:          1139896 kB
SwapCached:            0 kB
SReclaimable:      80000 kB
SwapTotal:       2097148 kB
SwapFree:        1048574 kB
HugePages_Total:       0
"""
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 17840004060 51392668    0    0    0     0          0         0 17840004060 51392668    0    0    0     0       0          0
  eth0: 1638238603   44440    0    0    0     0          0         0  2486355   23653    0    0    0     0       0          0
"""
# nvidia-smi --query-gpu=<STAT_FIELDS> --format=csv,noheader,nounits on two GPUs, one
# without a fan reading and one reporting no memory figures
NVIDIA_STATS = """\
0, NVIDIA GeForce RTX 4090, GPU-5f2e7c1a-3b8d-4e5f-9a0b-1c2d3e4f5a6b, 45, 12, 6144, 24564, 30, 65.43
1, NVIDIA A100-SXM4-80GB, GPU-0a1b2c3d-4e5f-6789-abcd-ef0123456789, 38, 97, [N/A], [N/A], [Not Supported], 312.50

2, truncated line
"""


def sample(at: datetime, core: float = 1.0) -> SysStat:
    return SysStat(at, [core], core, 1, 1, 0, 0, 0, 0.0, 0.0, 0.0, [])


def test_cpu_times_and_utilisation_between_two_readings() -> None:
    before, after = parse_cpu_times(PROC_STAT), parse_cpu_times(PROC_STAT_LATER)
    assert len(before) == 3  # the machine, then each core; the other lines are not cpu lines
    # core 0 was idle for 100 jiffies; core 1 busy 200 of 300; the machine 200 of 400
    assert utilisation(before, after) == [50.0, 0.0, 66.67]


def test_first_reading_is_the_average_since_boot() -> None:
    [total, *_] = utilisation([], parse_cpu_times(PROC_STAT))
    assert 0 < total < 100


def test_memory_is_counted_as_gopsutil_counts_it() -> None:
    mem = parse_meminfo(MEMINFO)
    assert mem["MemTotal"] == 24684852 * 1024 and mem["HugePages_Total"] == 0
    total, used, free, swap_total, swap_used = memory_mb(mem)
    assert total == 24684852 // 1024
    assert used == (24684852 - 22384280 - 94372 - 1139896 - 80000) // 1024
    assert free == 22384280 // 1024
    assert (swap_total, swap_used) == (2097148 // 1024, (2097148 - 1048574) // 1024)


def test_load_and_network_without_loopback() -> None:
    assert parse_loadavg("3.01 1.66 0.97 3/138 20780\n") == (3.01, 1.66, 0.97)
    assert parse_net_dev(NET_DEV) == [NetIO("eth0", 1638238603, 2486355)]


def test_reader_samples_a_proc_tree_and_differences_cpu_times(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    for name, content in (("stat", PROC_STAT), ("meminfo", MEMINFO), ("loadavg", "1 2 3 1/1 1"),
                          ("net/dev", NET_DEV)):
        (tmp_path / name).write_text(content)
    reader = SystemReader(tmp_path)
    reader.read(T0)
    (tmp_path / "stat").write_text(PROC_STAT_LATER)
    stat = reader.read(T0 + timedelta(seconds=5))
    assert stat.cpu_util_per_core == [0.0, 66.67] and stat.cpu_util_total == 50.0
    assert (stat.load_avg_1, stat.load_avg_15) == (1.0, 3.0)
    assert [io.name for io in stat.net_io] == ["eth0"]


def test_nvidia_smi_csv_from_recorded_output() -> None:
    first, second = parse_gpu_stats(NVIDIA_STATS, T0)
    assert (first.id, first.name, first.uuid) == (0, "NVIDIA GeForce RTX 4090", "GPU-5f2e7c1a-3b8d-4e5f-9a0b-1c2d3e4f5a6b")
    assert (first.temp_c, first.gpu_util_pct, first.mem_used_mb, first.mem_total_mb) == (45, 12.0, 6144, 24564)
    assert first.mem_util_pct == round(100 * 6144 / 24564, 2)
    assert (first.fan_speed_pct, first.power_draw_w, first.timestamp) == (30.0, 65.43, T0)
    # what a GPU does not report is 0, as in the Go version; the short row is skipped
    assert (second.mem_used_mb, second.mem_total_mb, second.mem_util_pct, second.fan_speed_pct) == (0, 0, 0.0, 0.0)
    assert (second.gpu_util_pct, second.power_draw_w) == (97.0, 312.5)


def test_nvidia_smi_empty_or_garbled_output_is_no_gpu() -> None:
    assert parse_gpu_stats("", T0) == []
    assert parse_gpu_stats("No devices were found\n", T0) == []


def test_rings_hold_one_hour() -> None:
    assert capacity(timedelta(seconds=5)) == 720
    assert capacity(timedelta(minutes=7)) == 8
    assert capacity(timedelta(hours=2)) == 1
    samples = Samples(capacity(timedelta(seconds=5)))
    for i in range(1000):
        samples.system.append(sample(T0 + timedelta(seconds=5 * i)))
        samples.gpus.append(parse_gpu_stats(NVIDIA_STATS, T0 + timedelta(seconds=5 * i)))
    system, gpus = samples.since(None)
    assert len(system) == 720 and len(gpus) == 2 * 720
    assert system[0].timestamp == T0 + timedelta(seconds=5 * 280)  # the oldest were dropped
    assert samples.latest()[0] is system[-1]


def test_after_filters_strictly_later_samples() -> None:
    samples = Samples(10)
    for i in range(4):
        samples.system.append(sample(T0 + timedelta(seconds=5 * i)))
        samples.gpus.append(parse_gpu_stats(NVIDIA_STATS, T0 + timedelta(seconds=5 * i)))
    system, gpus = samples.since((T0 + timedelta(seconds=5)).timestamp())
    assert [s.timestamp for s in system] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=15)]
    assert len(gpus) == 4 and all(g.timestamp > T0 + timedelta(seconds=5) for g in gpus)
    assert samples.since((T0 + timedelta(hours=1)).timestamp()) == ([], [])


def test_resize_keeps_the_newest_samples() -> None:
    samples = Samples(10)
    for i in range(10):
        samples.system.append(sample(T0 + timedelta(seconds=i)))
    samples.resize(3)
    assert [s.timestamp.second for s in samples.system] == [7, 8, 9]


def scrape(monitor: PerformanceMonitor) -> str:
    registry = CollectorRegistry()
    registry.register(SystemCollector(monitor))
    return generate_latest(registry).decode()


def test_metrics_carry_the_latest_sample_under_go_names() -> None:
    monitor = PerformanceMonitor(PerformanceConfig())
    assert scrape(monitor) == ""  # nothing sampled yet: no series
    monitor.samples.system.append(sample(T0, core=10.0))
    monitor.samples.system.append(SysStat(T0, [25.5, 50.0], 37.75, 2, 1, 1, 4, 3, 0.5, 0.25, 0.125,
                                          [NetIO("eth0", 100, 200)]))
    monitor.samples.gpus.append(parse_gpu_stats(NVIDIA_STATS, T0))
    text = scrape(monitor)
    assert 'llamaswap_cpu_util_percent{core="0"} 25.5\n' in text
    assert 'llamaswap_cpu_util_percent{core="1"} 50.0\n' in text
    assert "llamaswap_memory_total_bytes 2.097152e+06\n" in text
    assert "llamaswap_swap_used_bytes 3.145728e+06\n" in text
    assert 'llamaswap_load_average{interval="15m"} 0.125\n' in text
    assert 'llamaswap_network_bytes_total{direction="sent",interface="eth0"} 200.0\n' in text
    assert ('llamaswap_gpu_power_draw_watts{id="1",name="NVIDIA A100-SXM4-80GB",'
            'uuid="GPU-0a1b2c3d-4e5f-6789-abcd-ef0123456789"} 312.5\n') in text
    assert 'llamaswap_gpu_memory_total_bytes{id="0",name="NVIDIA GeForce RTX 4090"' in text
    monitor.config = PerformanceConfig(disabled=True)
    assert scrape(monitor) == ""


async def test_start_samples_at_once_and_a_reload_applies_performance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")  # no nvidia-smi, whatever the machine has
    monitor = PerformanceMonitor(PerformanceConfig())
    monitor.start()
    try:
        assert len(monitor.samples.system) == 1 and monitor.samples.system.maxlen == 720
        first = monitor._task
        monitor.configure(PerformanceConfig())  # unchanged: the task keeps running
        assert monitor._task is first
        monitor.configure(PerformanceConfig(every="10s"))
        assert monitor._task is not first and first is not None and first.cancelling()
        assert len(monitor.samples.system) == 2 and monitor.samples.system.maxlen == 360
        second = monitor._task
        monitor.configure(PerformanceConfig(disabled=True))
        assert monitor._task is None and not monitor.enabled and not monitor.samples.system
        await monitor.stop()  # waits for the cancelled tasks to end
        assert first.cancelled() and second is not None and second.cancelled()
    finally:
        await monitor.stop()
