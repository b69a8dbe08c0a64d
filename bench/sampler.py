"""What the `performance` sampler costs: CPU time per system sample, and per read of a full
hour by `/api/performance` and `/metrics` (docs/performance.md).

    .venv/bin/python -m bench.sampler
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from llama_swap.config import PerformanceConfig
from llama_swap.observe.nvidia import parse_gpu_stats
from llama_swap.observe.perf_metrics import SystemCollector
from llama_swap.observe.performance import PerformanceMonitor
from llama_swap.observe.system import SystemReader

GPU_CSV = "0, NVIDIA GeForce RTX 4090, GPU-5f2e7c1a, 45, 12, 6144, 24564, 30, 65.43\n"


def cpu_us(work: Callable[[], object], repeat: int) -> float:
    """Median of five runs of CPU microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeat):
            work()
        runs.append((time.process_time() - start) / repeat * 1e6)
    return sorted(runs)[2]


def main() -> None:
    reader = SystemReader()
    now = datetime.now(timezone.utc)
    reader.read(now)
    monitor = PerformanceMonitor(PerformanceConfig())
    for _ in range(monitor.samples.system.maxlen or 0):  # a full hour: 720 samples
        monitor.samples.system.append(reader.read(now))
        monitor.samples.gpus.append(parse_gpu_stats(GPU_CSV, now))
    registry = CollectorRegistry()
    registry.register(SystemCollector(monitor))
    print(f"system sample (/proc reads + parsing): {cpu_us(lambda: reader.read(now), 2000):8.1f} µs CPU")
    print(f"nvidia-smi output parsing, one GPU:    {cpu_us(lambda: parse_gpu_stats(GPU_CSV, now), 20000):8.1f} µs CPU")
    print(f"/api/performance body, a full hour:    "
          f"{cpu_us(lambda: orjson.dumps(monitor.samples.since(None)), 50):8.1f} µs CPU")
    print(f"/metrics system and GPU series:        {cpu_us(lambda: generate_latest(registry), 2000):8.1f} µs CPU")


if __name__ == "__main__":
    main()
