"""Run the real service as a subprocess on loopback, with fake upstream processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx
import openai
import pytest

from tests.fakes import fake_argv, free_port, is_alive, wait_http

START_TIMEOUT = 20.0
HI = [{"role": "user", "content": "hi"}]


@dataclass
class RunningService:
    """A llama-swap subprocess and the ways tests talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=60.0)

    def openai(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="test-key", max_retries=0, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def chat(self, model: str, **extra: object) -> httpx.Response:
        """A plain (non-openai-client) chat completion request."""
        return self.http.post("/v1/chat/completions", json={"model": model, "messages": HI, **extra})

    def metric(self, name: str) -> float:
        """The value of an unlabelled Prometheus series from GET /metrics."""
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} metric")

    def health(self) -> dict:
        return self.http.get("/health").json()

    def pid_of(self, model: str) -> int:
        return self.health()["models"][model]["pid"]

    def wait_ready(self) -> None:
        if not wait_http(f"{self.url}/health", timeout=START_TIMEOUT, proc=self.proc):
            raise AssertionError(f"service did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the service's graceful shutdown."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("service did not stop within its shutdown budget")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll a condition; bounded. Tests use it for state that changes in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def service_command(config_path: Path, listen: str) -> list[str]:
    return [sys.executable, "-m", "llama_swap", "--config", str(config_path), "--listen", listen]


def launch(
    config_path: Path,
    log_path: Path,
    *,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RunningService:
    """Start the service on a free loopback port, its output going to ``log_path``."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*service_command(config_path, f"127.0.0.1:{port}"), *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
    return RunningService(proc, f"http://127.0.0.1:{port}", config_path, log_path)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[[str], RunningService]]:
    """Factory: start the service on a YAML config (dedented); stopped at teardown."""
    with contextlib.ExitStack() as stack:
        count = iter(range(1000))

        def start(config_yaml: str) -> RunningService:
            n = next(count)
            config_path = tmp_path / f"config{n}.yaml"
            text = textwrap.dedent(config_yaml)
            if "startPort" not in text:  # keep concurrent runs apart, below the ephemeral port range
                text = f"startPort: {random.randrange(10000, 32000, 50)}\n" + text
            if "logToStdout" not in text:  # tests read upstream output from the service's stdout
                text = "logToStdout: both\n" + text
            config_path.write_text(text)
            return stack.enter_context(serving(config_path, tmp_path / f"service{n}.log"))

        yield start


@pytest.fixture
def remote() -> Iterator[int]:
    """A peer: an OpenAI-compatible server this service does not manage (the fake upstream)."""
    port = free_port()
    proc = subprocess.Popen(fake_argv(port, "remote"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/health", timeout=15, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """Another program's server: a socket listening on a free loopback port, never accepting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@contextlib.contextmanager
def serving(config_path: Path, log_path: Path, **launch_args: Any) -> Iterator[RunningService]:
    """A started, ready service; stopped afterwards, checking that no upstream survived it."""
    service = launch(config_path, log_path, **launch_args)
    try:
        service.wait_ready()
        yield service
    finally:
        stop_checking_orphans(service)


def stop_checking_orphans(service: RunningService) -> None:
    """Stop the service; every upstream it had running must be gone afterwards."""
    try:
        models = service.http.get("/health", timeout=5).json().get("models", {})
    except (httpx.HTTPError, ValueError):
        models = {}
    pids = [m["pid"] for m in models.values() if m.get("pid")]
    service.stop()
    leftover = [pid for pid in pids if not wait_until(lambda pid=pid: not is_alive(pid), timeout=5)]
    assert not leftover, f"upstream processes survived the service: {leftover}"
