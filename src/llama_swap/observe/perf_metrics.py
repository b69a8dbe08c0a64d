"""The latest system and GPU sample as Prometheus series, named as the Go version names them.

Read from the sampler's rings at scrape time: no work on any request path. With
`performance.disabled` there are no such series (the per-model ones stay).
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llama_swap.observe.nvidia import GpuStat
from llama_swap.observe.performance import PerformanceMonitor
from llama_swap.observe.system import MIB, SysStat

_GPU_SERIES: tuple[tuple[str, str, Callable[[GpuStat], float]], ...] = (
    ("llamaswap_gpu_temperature_celsius", "GPU temperature in Celsius", lambda g: g.temp_c),
    ("llamaswap_gpu_vram_temperature_celsius", "GPU VRAM temperature in Celsius", lambda g: g.vram_temp_c),
    ("llamaswap_gpu_util_percent", "GPU utilization percent (0-100)", lambda g: g.gpu_util_pct),
    ("llamaswap_gpu_memory_util_percent", "GPU memory utilization percent (0-100)", lambda g: g.mem_util_pct),
    ("llamaswap_gpu_memory_used_bytes", "GPU memory used in bytes", lambda g: g.mem_used_mb * MIB),
    ("llamaswap_gpu_memory_total_bytes", "GPU memory total in bytes", lambda g: g.mem_total_mb * MIB),
    ("llamaswap_gpu_fan_speed_percent", "GPU fan speed percent (0-100)", lambda g: g.fan_speed_pct),
    ("llamaswap_gpu_power_draw_watts", "GPU power draw in watts", lambda g: g.power_draw_w),
)


class SystemCollector(Collector):
    def __init__(self, monitor: PerformanceMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        if not self._monitor.enabled:
            return
        system, gpus = self._monitor.samples.latest()
        if system is not None:
            yield from system_families(system)
        yield from gpu_families(gpus)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def system_families(s: SysStat) -> Iterator[Metric]:
    cpu = GaugeMetricFamily("llamaswap_cpu_util_percent", "CPU utilization per core (0-100)", labels=("core",))
    for core, percent in enumerate(s.cpu_util_per_core):
        cpu.add_metric((str(core),), percent)
    yield cpu
    yield _gauge("llamaswap_memory_total_bytes", "Total memory in bytes", s.mem_total_mb * MIB)
    yield _gauge("llamaswap_memory_used_bytes", "Used memory in bytes", s.mem_used_mb * MIB)
    yield _gauge("llamaswap_memory_free_bytes", "Free memory in bytes", s.mem_free_mb * MIB)
    yield _gauge("llamaswap_swap_total_bytes", "Total swap in bytes", s.swap_total_mb * MIB)
    yield _gauge("llamaswap_swap_used_bytes", "Used swap in bytes", s.swap_used_mb * MIB)
    load = GaugeMetricFamily("llamaswap_load_average", "Load average", labels=("interval",))
    for interval, value in (("1m", s.load_avg_1), ("5m", s.load_avg_5), ("15m", s.load_avg_15)):
        load.add_metric((interval,), value)
    yield load
    if s.net_io:
        net = CounterMetricFamily("llamaswap_network_bytes", "Total network bytes transferred",
                                  labels=("interface", "direction"))
        for io in s.net_io:
            net.add_metric((io.name, "recv"), io.bytes_recv)
            net.add_metric((io.name, "sent"), io.bytes_sent)
        yield net


def gpu_families(gpus: list[GpuStat]) -> Iterator[Metric]:
    """Each GPU's latest values, labelled id/name/uuid (an empty uuid is an absent label)."""
    if not gpus:
        return
    for name, text, value in _GPU_SERIES:
        family = GaugeMetricFamily(name, text, labels=("id", "name", "uuid"))
        for g in sorted(gpus, key=lambda g: g.id):
            family.add_metric((str(g.id), g.name, g.uuid), value(g))
        yield family
