"""The `performance` sampler: system and GPU samples every `performance.every`, one hour kept.

A task of its own, started with the service: a system sample is a few synchronous /proc
reads (~100 µs), GPUs a bounded `nvidia-smi` subprocess awaited off the event loop, so the
request path never waits for either. `/api/performance` and `/metrics` only read the rings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections import deque
from datetime import datetime, timedelta, timezone

from llama_swap.config import PerformanceConfig
from llama_swap.observe.nvidia import NVIDIA_SMI, STAT_FIELDS, GpuStat, NvidiaSmiError, parse_gpu_stats, query
from llama_swap.observe.system import SysStat, SystemReader

log = logging.getLogger("llama_swap.performance")

WINDOW = timedelta(hours=1)
GPU_TIMEOUT = 10.0  # seconds an nvidia-smi query may take (at most `every`)


def capacity(every: timedelta) -> int:
    """Samples in the window (`1h / every`), as the Go version sizes its rings."""
    return max(1, WINDOW // every)


class Samples:
    """The newest samples, bounded: each ring drops its oldest entry when full."""

    def __init__(self, size: int) -> None:
        self.system: deque[SysStat] = deque(maxlen=size)
        self.gpus: deque[list[GpuStat]] = deque(maxlen=size)  # one list of every GPU per sample

    def resize(self, size: int) -> None:
        """A new bound, keeping the newest samples that fit."""
        self.system = deque(self.system, maxlen=size)
        self.gpus = deque(self.gpus, maxlen=size)

    def clear(self) -> None:
        self.system.clear()
        self.gpus.clear()

    def since(self, after: float | None) -> tuple[list[SysStat], list[GpuStat]]:
        """Samples taken strictly after ``after`` (epoch seconds), all of them for None."""
        system = [s for s in self.system if after is None or s.timestamp.timestamp() > after]
        gpus = [g for sample in self.gpus for g in sample if after is None or g.timestamp.timestamp() > after]
        return system, gpus

    def latest(self) -> tuple[SysStat | None, list[GpuStat]]:
        return (self.system[-1] if self.system else None), (self.gpus[-1] if self.gpus else [])


class PerformanceMonitor:
    """Runs the sampling task as `performance` says; a reload restarts or stops it."""

    def __init__(self, config: PerformanceConfig) -> None:
        self.config = config
        self.samples = Samples(capacity(config.every))
        self._reader = SystemReader()
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled, still killing an nvidia-smi
        self._failing: set[str] = set()  # what failed at its last try: a failure is logged once

    @property
    def enabled(self) -> bool:
        return not self.config.disabled

    def start(self) -> None:
        """Take a first sample at once (so the endpoints have one), then one every `every`."""
        if self.config.disabled or self._task is not None:
            return
        nvidia = shutil.which(NVIDIA_SMI)
        log.info("performance: sampling every %gs%s", self.config.every.total_seconds(),
                 ", GPUs through nvidia-smi" if nvidia else " (no nvidia-smi: no GPU statistics)")
        self._take_system()
        self._task = asyncio.create_task(self._run(nvidia), name="performance sampler")
        self._task.add_done_callback(_report_crash)

    def configure(self, config: PerformanceConfig) -> None:
        """Apply a reloaded `performance`: a new interval restarts the sampling (the samples
        that fit the new window are kept), `disabled` stops it and drops them."""
        if config == self.config:
            return
        self._cancel()
        self.config = config
        if config.disabled:
            self.samples.clear()
            log.info("performance: sampling disabled")
            return
        self.samples.resize(capacity(config.every))
        self.start()

    async def stop(self) -> None:
        self._cancel()
        for task in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _run(self, nvidia: str | None) -> None:
        loop = asyncio.get_running_loop()
        every = self.config.every.total_seconds()
        due = loop.time()
        while True:
            if nvidia is not None:
                await self._take_gpus(nvidia, min(every, GPU_TIMEOUT))
            due = max(due + every, loop.time())  # after a stall (a suspended machine), no burst
            await asyncio.sleep(due - loop.time())
            self._take_system()

    def _take_system(self) -> None:
        try:
            stat = self._reader.read(datetime.now(timezone.utc))
        except (OSError, ValueError, IndexError) as exc:
            self._failed("system", f"cannot read system statistics from /proc: {exc}")
            return
        self._succeeded("system")
        self.samples.system.append(stat)

    async def _take_gpus(self, nvidia: str, timeout: float) -> None:
        now = datetime.now(timezone.utc)
        try:
            text = await query(nvidia, STAT_FIELDS, timeout)
        except NvidiaSmiError as exc:
            self._failed("gpu", str(exc))
            return
        self._succeeded("gpu")
        self.samples.gpus.append(parse_gpu_stats(text, now))

    def _failed(self, what: str, message: str) -> None:
        if what in self._failing:
            log.debug("performance: %s", message)
        else:
            self._failing.add(what)
            log.warning("performance: %s (logged once until it works again)", message)

    def _succeeded(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.info("performance: %s statistics work again", what)


def _report_crash(task: asyncio.Task[None]) -> None:
    """A bug that ends the sampler is logged when it happens, not when the task is collected."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("performance: sampling stopped by an error", exc_info=exc)
