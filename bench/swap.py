"""Swap latency with the real llama-server + SmolLM2-135M.

- Direct: spawn llama-server and probe its /health every 2 ms on fresh connections: when it
  first accepts a connection (it answers 503 while loading) and when it first answers 200 —
  its own start-to-listening and start-to-healthy times.
- Cold start through the service: with nothing running, a streaming chat request
  (`max_tokens: 1`), timed to the first byte of the answer, while the same prober watches
  the model's port. Direct and cold trials alternate, so both see the same machine.
- Alternating A/B/A/B: two model ids on the same GGUF (different ports); every request is
  a swap (stop the other, start this one), probed the same way.

llama-server's own start time varies a lot on a busy machine (0.5–3 s for the same model),
so besides the issue's figure (cold first byte p50 − direct start-to-healthy p50) the part
reports the service's share measured within each trial: request → port listening, minus
the direct spawn → listening (the cost of deciding, stopping and spawning), plus upstream
healthy → first byte (health-poll granularity and proxying). Nothing is pinned here: the
service, its llama-servers and the direct ones all use every CPU alike.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench import procs, service
from bench.load import chat_body
from bench.stats import median, summary

SETUP_SCRIPT = procs.REPO / "scripts" / "setup-llama"
T = TypeVar("T")
SETUP_TIMEOUT = 45 * 60  # the first run compiles llama.cpp (about 12 minutes on 2 cores)


@dataclass(frozen=True)
class LlamaInstall:
    server: Path
    gguf: Path


def setup_llama() -> LlamaInstall:
    """Run scripts/setup-llama (installs and caches llama-server + SmolLM2) and read its paths."""
    print("swap: scripts/setup-llama (the first run compiles llama.cpp, ~12 min)", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, str(SETUP_SCRIPT)],
        cwd=procs.REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        timeout=SETUP_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/setup-llama exited with status {done.returncode}")
    found = dict(line.strip().partition("=")[::2] for line in done.stdout.splitlines() if "=" in line)
    install = LlamaInstall(Path(found.get("LLAMA_SERVER", "")), Path(found.get("SMOLLM_GGUF", "")))
    if not os.access(install.server, os.X_OK) or not install.gguf.is_file():
        raise RuntimeError(f"scripts/setup-llama printed unusable paths: {done.stdout!r}")
    return install


class Prober:
    """Probes `GET /health` on a port every 2 ms in a thread; notes when it first connects and first gets 200."""

    def __init__(self, port: int, timeout: float = 90.0) -> None:
        self.port = port
        self.timeout = timeout
        self.listening: float | None = None
        self.healthy: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{port}", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait(self) -> float:
        """Block until healthy (or the timeout); returns the monotonic time it was first healthy."""
        self._thread.join(timeout=self.timeout + 5)
        if self.healthy is None:
            raise TimeoutError(f"127.0.0.1:{self.port} not healthy after {self.timeout:.0f} s")
        return self.healthy

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            status = procs.http_status("127.0.0.1", self.port, "/health", timeout=0.5)
            now = time.monotonic()
            if status is not None and self.listening is None:
                self.listening = now
            if status == 200:
                self.healthy = now
                return
            time.sleep(0.002)


@dataclass(frozen=True)
class Start:
    """One start, in seconds from the spawn (direct) or from the request (through the service)."""

    listening: float
    healthy: float
    first_byte: float | None = None


def direct_start(install: LlamaInstall, workdir: Path) -> Start:
    """Spawn llama-server and time it to listening and to healthy."""
    port = procs.free_port()
    with Prober(port, timeout=60) as probe:
        started = time.monotonic()
        proc = procs.spawn(service.llama_argv(install.server, install.gguf, port), log=workdir / "llama-direct.log")
        with procs.running(proc):
            healthy = probe.wait()
    assert probe.listening is not None
    return Start(probe.listening - started, healthy - started)


def first_byte(port: int, model: str, timeout: float = 90.0) -> tuple[float, float]:
    """(sent, first byte) monotonic times of a streaming chat request; reads the whole answer."""
    body = chat_body(model, stream=True, max_tokens=1).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sent = time.monotonic()
        sock.sendall(request)
        answer = [sock.recv(65536)]
        arrived = time.monotonic()
        while data := sock.recv(65536):
            answer.append(data)
    head = b"".join(answer)[:400]
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{model}: unexpected answer {head!r}")
    return sent, arrived


def through_service(svc: service.Service, model: str) -> Start:
    """A request that has to start `model`: times to its upstream listening, healthy, and the first byte."""
    with Prober(svc.models[model].port) as probe:
        sent, arrived = first_byte(svc.port, model)
        healthy = probe.wait()
    svc.remember_children()
    assert probe.listening is not None
    return Start(probe.listening - sent, healthy - sent, arrived - sent)


def _unload(svc: service.Service) -> None:
    """Stop every model and wait until none runs."""
    svc.get("/unload")
    deadline = time.monotonic() + 30
    while svc.get("/running").get("running"):
        if time.monotonic() > deadline:
            raise TimeoutError("models still running 30 s after /unload")
        time.sleep(0.01)


def _service_share(starts: list[Start], direct: list[Start]) -> dict[str, object]:
    """What the service adds: before the upstream listens (vs direct) and after it is healthy."""
    before = median([s.listening for s in starts]) - median([d.listening for d in direct])
    after = [s.first_byte - s.healthy for s in starts if s.first_byte is not None]
    return {
        "request_to_listening_ms": summary([s.listening for s in starts], 1e3),
        "request_to_healthy_ms": summary([s.healthy for s in starts], 1e3),
        "first_byte_ms": summary([s.first_byte for s in starts if s.first_byte is not None], 1e3),
        "added_before_listening_ms": round(before * 1e3, 1),
        "healthy_to_first_byte_ms": summary(after, 1e3),
        "service_share_ms": round((before + median(after)) * 1e3, 1),
    }


def measure(install: LlamaInstall, workdir: Path, *, trials: int, swaps: int, budget: float) -> dict[str, object]:
    """Direct starts, cold starts and A/B swaps through the service (ms).

    `budget` (s) bounds each of the two loops on a slow machine: after it, a loop stops once
    it has 2 samples; the counts done are reported.
    """
    procs.pin_self(None)
    direct_start(install, workdir)  # warm-up: page cache, first-run costs
    port_a, port_b = procs.free_ports(2)
    models = [
        service.llama_model("smol-a", port_a, install.server, install.gguf),
        service.llama_model("smol-b", port_b, install.server, install.gguf),
    ]
    direct: list[Start] = []
    cold: list[Start] = []
    alternating: list[Start] = []
    warm: list[float] = []
    failures: list[str] = []

    def attempt(what: str, job: Callable[[], T]) -> T | None:
        """Run one timed request; a failed one is counted (and reported), not fatal."""
        try:
            return job()
        except (OSError, RuntimeError, TimeoutError) as error:
            failures.append(f"{what}: {error}"[:300])
            return None

    with service.start(workdir, models, together=False, cpus=None, name="service-llama") as svc:
        attempt("warm-up", lambda: first_byte(svc.port, "smol-a"))
        deadline = time.monotonic() + budget / 2
        for trial in range(trials):
            if trial >= 2 and time.monotonic() > deadline:
                break
            _unload(svc)
            direct.append(direct_start(install, workdir))
            if (start := attempt("cold start", lambda: through_service(svc, "smol-a"))) is not None:
                cold.append(start)
            if (times := attempt("warm request", lambda: first_byte(svc.port, "smol-a"))) is not None:
                warm.append(times[1] - times[0])
        deadline = time.monotonic() + budget / 2
        for index in range(swaps):
            if index >= 2 and time.monotonic() > deadline:
                break
            target = "smol-b" if index % 2 == 0 else "smol-a"
            if (start := attempt(f"swap to {target}", lambda: through_service(svc, target))) is not None:
                alternating.append(start)
            if index % 2 == 1:
                direct.append(direct_start(install, workdir))
        _unload(svc)
    if not cold or not alternating:
        raise RuntimeError(f"too many failed requests: {failures}")
    healthy_p50 = median([d.healthy for d in direct])
    cold_p50 = median([c.first_byte for c in cold if c.first_byte is not None])
    swap_p50 = median([s.first_byte for s in alternating if s.first_byte is not None])
    return {
        "trials": len(cold),
        "swaps": len(alternating),
        "direct_start_to_listening_ms": summary([d.listening for d in direct], 1e3),
        "direct_start_to_healthy_ms": summary([d.healthy for d in direct], 1e3),
        "warm_first_byte_ms": summary(warm, 1e3),
        "cold": _service_share(cold, direct),
        "cold_first_byte_ms": summary([c.first_byte for c in cold if c.first_byte is not None], 1e3),
        "cold_added_ms": round((cold_p50 - healthy_p50) * 1e3, 1),
        "swap": _service_share(alternating, direct),
        "swap_first_byte_ms": summary([s.first_byte for s in alternating if s.first_byte is not None], 1e3),
        "swap_added_ms": round((swap_p50 - healthy_p50) * 1e3, 1),
        "failed_requests": len(failures),
        "failures": failures,
    }
