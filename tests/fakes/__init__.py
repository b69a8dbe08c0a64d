"""Helpers for tests that run the fake upstream (tests/fakes/fake_upstream.py)."""

from __future__ import annotations

import re
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

FAKE_UPSTREAM: Path = Path(__file__).resolve().with_name("fake_upstream.py")
WRAPPER: Path = Path(__file__).resolve().with_name("wrapper.sh")

_MACRO = re.compile(r"^\$\{[A-Za-z0-9_.-]+\}$")

__all__ = [
    "FAKE_UPSTREAM",
    "WRAPPER",
    "fake_argv",
    "fake_cmd",
    "wrapper_cmd",
    "free_port",
    "wait_http",
    "is_alive",
]


def _switch_args(switches: dict[str, Any]) -> list[str]:
    """chunk_delay=0.1 -> ["--chunk-delay", "0.1"]; True -> bare flag; False/None -> omitted."""
    out: list[str] = []
    for key, val in switches.items():
        flag = "--" + key.replace("_", "-")
        if val is True:
            out.append(flag)
        elif val is False or val is None:
            continue
        else:
            out += [flag, str(val)]
    return out


def fake_argv(port: str | int, name: str = "fake", **switches: Any) -> list[str]:
    """argv list to start the fake upstream directly (e.g. with subprocess.Popen)."""
    return [sys.executable, str(FAKE_UPSTREAM), "--port", str(port), "--name", name, *_switch_args(switches)]


def _join(parts: list[str]) -> str:
    # Leave macros such as ${PORT} bare so the config's macro expansion sees them verbatim.
    return " ".join(p if _MACRO.match(p) else shlex.quote(p) for p in parts)


def fake_cmd(port: str | int = "${PORT}", name: str = "fake", **switches: Any) -> str:
    """Command line string for a config.yaml ``cmd:`` that runs the fake upstream.

    >>> fake_cmd(name="a", chunk_delay=0.1, ignore_sigterm=True)  # doctest: +ELLIPSIS
    '... --port ${PORT} --name a --chunk-delay 0.1 --ignore-sigterm'
    """
    return _join(fake_argv(port, name, **switches))


def wrapper_cmd(inner: str | list[str], child_ignores_term: bool = False) -> str:
    """Command line running ``inner`` (a string from fake_cmd, or an argv list) under wrapper.sh."""
    inner_s = inner if isinstance(inner, str) else _join(inner)
    opt = " --child-ignores-term" if child_ignores_term else ""
    return f"/bin/sh {shlex.quote(str(WRAPPER))}{opt} -- {inner_s}"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 10.0, status: int = 200, proc: Any = None) -> bool:
    """Poll ``url`` until it answers ``status``; False on timeout or if ``proc`` (a Popen) exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == status:
                    return True
        except urllib.error.HTTPError as e:
            if e.code == status:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return False


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    Orphans (e.g. a wrapper's child after the wrapper died) are reparented to
    PID 1, which may reap them only seconds later; ``os.kill(pid, 0)`` alone
    would report such zombies as alive.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # state is the first field after the ")" closing the command name
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")
