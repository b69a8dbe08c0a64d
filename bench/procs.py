"""Processes the bench starts: free ports, CPU pinning, spawning, waiting for health, stopping.

Every process is started in its own session (process group) and stopped by its pid/pgid
only — never by name — with SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cpu_layout() -> tuple[set[int] | None, set[int] | None]:
    """(service CPUs, everything-else CPUs): core 0 vs core 1 when at least 2 cores are usable."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def pin_self(cpus: set[int] | None) -> None:
    """Pin the bench process itself (None: every CPU)."""
    os.sched_setaffinity(0, cpus if cpus else set(range(os.cpu_count() or 1)))


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def spawn(
    argv: Sequence[str],
    *,
    cpus: set[int] | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, optionally pinned, output to `log` (or discarded)."""

    def _child_setup() -> None:
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    sink = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,
            cwd=REPO,
            env=env,
        )
    finally:
        if log:
            sink.close()  # type: ignore[union-attr]


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the bench dies (even by SIGKILL)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop what the bench started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace` s, then SIGKILL it; always reaps."""
    if proc is None:
        return
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (the child may have exited before its children).
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def kill_pids(pids: Sequence[int]) -> None:
    """SIGKILL leftover processes by pid (those still alive)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def running(proc: subprocess.Popen[bytes], grace: float = 10.0) -> Iterator[subprocess.Popen[bytes]]:
    """Stop `proc` (and its group) when the block ends, however it ends."""
    try:
        yield proc
    finally:
        stop(proc, grace)


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status of `GET path` on a fresh connection (None if it cannot connect or answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            line = sock.makefile("rb").readline(200)
    except OSError:
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def wait_healthy(
    host: str,
    port: int,
    path: str = "/health",
    timeout: float = 30.0,
    poll: float = 0.002,
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll until `GET path` answers 200; returns the monotonic time it did. Raises on timeout/exit."""
    deadline = time.monotonic() + timeout
    while True:
        if http_status(host, port, path, timeout=min(1.0, timeout)) == 200:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} before it was healthy")
        if time.monotonic() > deadline:
            raise TimeoutError(f"127.0.0.1:{port}{path} not healthy after {timeout:.0f} s")
        time.sleep(poll)


def tail(path: Path, limit: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")
