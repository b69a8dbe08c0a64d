"""Non-streaming load with `wrk`: throughput, latency percentiles and errors, as one JSON line.

A generated Lua script sets the POST body and, in `done()`, prints the summary and latency
percentiles (µs) as JSON after a `BENCH_JSON ` marker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import die_with_parent

MARKER = "BENCH_JSON "
LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"connect_errors":%%d,"read_errors":%%d,"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


class WrkMissing(RuntimeError):
    """wrk is not installed and could not be installed."""


@dataclass
class WrkResult:
    """One wrk run's summary (latencies in µs)."""

    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.status_errors + self.timeouts

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1), "errors": self.errors}


def ensure_wrk(install: bool = True) -> str:
    """The wrk binary; installs Debian's package (apt-get) when missing and allowed."""
    found = shutil.which("wrk")
    if found:
        return found
    if install and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
            try:
                subprocess.run(argv, env=env, check=True, timeout=600, stdout=subprocess.DEVNULL)
            except (subprocess.SubprocessError, OSError) as error:
                raise WrkMissing(f"wrk is not installed and `{' '.join(argv)}` failed: {error}") from None
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing("wrk is not installed; install it (Debian/Ubuntu: `apt-get install -y wrk`) and run again")


def chat_body(model: str, stream: bool = False, max_tokens: int = 8, **extra: object) -> str:
    """A small OpenAI chat request body (`extra`: more top-level keys)."""
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say ok."}],
            "max_tokens": max_tokens,
            "stream": stream,
            **extra,
        },
        separators=(",", ":"),
    )


def run_wrk(
    wrk: str,
    url: str,
    body: str,
    *,
    connections: int,
    seconds: float,
    cpus: set[int] | None = None,
    threads: int = 1,
) -> WrkResult:
    """Run wrk against `url` (POST `body`) and parse its summary; bounded by `seconds` + margin."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA % {"body": body, "marker": MARKER})
        argv = [
            wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(script), url,
        ]  # fmt: skip

        def _child_setup() -> None:
            die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=_child_setup)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return WrkResult(**json.loads(line[len(MARKER) :]))
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
