"""Ports for `${PORT}` models: whether one can be listened on, which to take instead, and
the kernel's ephemeral range, where any outgoing connection may hold a port.

A port assigned from `startPort` may be taken when its model starts: by another program
(a second instance of the service on the same machine), or, inside the ephemeral range,
by the local end of any outgoing connection — the service's own to other upstreams
included. The model then moves to the next port that can be bound; a model whose port is
written in its `cmd` keeps the clear error of `process.py`.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Callable, Collection

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
HIGHEST = 65535


def bind_hosts(proxy_host: str | None) -> list[str]:
    """Where to try a port: the address the proxy names, and every IPv4 address, since a
    server may listen on all of them (`--host 0.0.0.0`) and a holder on any one blocks it."""
    return list(dict.fromkeys(["0.0.0.0", proxy_host or "127.0.0.1"]))


def can_bind(host: str, port: int) -> bool:
    """Whether a server could listen on ``host``:``port`` now, on every address the host
    name gives. Bound as servers bind (`SO_REUSEADDR`: a connection of an earlier run
    lingering in TIME_WAIT does not count), so a listener or a connection's local end
    holding the port does."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV)
    except socket.gaierror:
        return True  # the server cannot resolve it either: its own error says so
    return all(_bindable(family, where) for family, _, _, _, where in infos)


def _bindable(family: int, where: tuple) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(where)
        except OSError as exc:
            # other errors (an address not on this machine, a port below 1024 for a user):
            # not a holder, and the server's own error will say what it is
            return exc.errno != errno.EADDRINUSE
    return True


def next_free(after: int, reserved: Collection[int], free: Callable[[int], bool]) -> int | None:
    """The first port above ``after`` that is not ``reserved`` (assigned to another model)
    and is ``free``; None when none is left."""
    for port in range(after + 1, HIGHEST + 1):
        if port not in reserved and free(port):
            return port
    return None


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int] | None:
    """The kernel's range of ports for outgoing connections (None where it cannot be read)."""
    try:
        low, high = (int(number) for number in path.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def start_port_warning(ports: Collection[int], ephemeral: tuple[int, int] | None) -> str | None:
    """A warning when ports given out from `startPort` lie in the ephemeral range."""
    if not ports or ephemeral is None:
        return None
    low, high = ephemeral
    inside = sorted(port for port in ports if low <= port <= high)
    if not inside:
        return None
    given = f"port {inside[0]}" if len(inside) == 1 else f"ports {inside[0]}–{inside[-1]}"
    return (f"startPort: models get {given}, inside the kernel's ephemeral port range {low}–{high} "
            f"(net.ipv4.ip_local_port_range), where outgoing connections may hold them: a model then moves to "
            f"another port; set startPort below {low} to avoid it")
