"""The service's own resource use: CPU seconds and RSS (its main process only, not its upstreams)."""

from __future__ import annotations

import threading

import psutil


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds used so far by the process itself (children excluded)."""
    times = proc.cpu_times()
    return times.user + times.system


def rss_mb(proc: psutil.Process) -> float:
    """Resident set size in MiB."""
    return proc.memory_info().rss / 2**20


class RssSampler:
    """Samples a process's RSS every `interval` s in a thread; `peak_mb` is the largest seen."""

    def __init__(self, proc: psutil.Process, interval: float = 0.02) -> None:
        self.proc = proc
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.peak_mb = rss_mb(self.proc)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.proc))
            except psutil.Error:
                return
