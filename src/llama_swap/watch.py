"""Notice config changes by polling, like the Go version: robust where inotify is not.

Editors save by writing a temporary file and renaming it, Docker bind-mounts a single
file, Kubernetes swaps a ConfigMap's symlink: comparing (inode, size, mtime) of every
watched path every couple of seconds catches them all, at the cost of a few stat calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger("llama_swap.watch")

POLL_SECONDS = 2.0

Snapshot = tuple[tuple[str, int, int, int] | tuple[str], ...]


def _stat(path: Path) -> tuple[str, int, int, int] | tuple[str]:
    try:
        st = os.stat(path)  # follows symlinks: a swapped link target counts as a change
    except OSError:
        return (str(path),)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def snapshot(files: list[Path], dirs: list[Path]) -> Snapshot:
    """Identity of the config file(s) and of every *.yml / *.yaml in the config dirs."""
    entries = [_stat(f) for f in files]
    for directory in dirs:
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith((".yaml", ".yml")))
        except OSError:
            names = []
        entries.append((str(directory),))
        entries.extend(_stat(directory / name) for name in names)
    return tuple(entries)


async def watch(
    files: list[Path], dirs: list[Path], on_change: Callable[[], Awaitable[object]], interval: float = POLL_SECONDS
) -> None:
    """Call ``on_change`` after each change; runs until cancelled."""
    last = snapshot(files, dirs)
    while True:
        await asyncio.sleep(interval)
        current = snapshot(files, dirs)
        if current != last:
            last = current
            log.info("config change detected")
            await on_change()
