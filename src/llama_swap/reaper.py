"""A watchdog process that kills every upstream if the service dies without cleaning up.

The service starts one reaper at start-up and tells it, over the reaper's stdin, which
process groups it spawned (``+PGID``) and which it already reaped (``-PGID``). When the
stdin pipe closes because the service is gone — even after ``kill -9``, which no signal
handler and no parent-death signal on a direct child can fully cover (a wrapper script's
children survive it) — the reaper terminates the remaining groups and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_groups(groups: set[int], grace: float = 1.0) -> None:
    """SIGTERM each group, give them ``grace`` seconds, then SIGKILL what is left."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.05)
    _signal_groups(groups, signal.SIGKILL)


def run(stream: "os.PathLike[str] | int" = 0) -> None:
    """Track groups from ``stream`` until end of file, then kill the survivors."""
    groups: set[int] = set()
    with open(stream, "rb", buffering=0, closefd=False) as pipe:
        buffered = b""
        while chunk := pipe.read(4096):
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line[:1] == b"+":
                    groups.add(int(line[1:]))
                elif line[:1] == b"-":
                    groups.discard(int(line[1:]))
    kill_groups(groups)


class Reaper:
    """The service's handle on its reaper process."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llama_swap.reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()

    def track(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def close(self) -> None:
        """Normal shutdown: everything was stopped, so the reaper finds nothing to kill."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _send(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode())
        except OSError:
            pass  # the reaper is gone; the parent-death signal still covers direct children


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    run()
