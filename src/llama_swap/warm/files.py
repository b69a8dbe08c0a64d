"""Saved KV caches on disk: their names, whether one is still valid, the budget, free space.

A cache file is named `<model>.<key>.slot<N>.bin`. The key digests everything that shapes the
cache — the model's id, its command as written (the `${PORT}` it happens to get left out) and
the model file's size and modification time — so a changed command, context size, cache type
or a replaced model file never reuses a stale cache: its files are discarded instead. The
files of all models share one budget, `warmSwapMaxMB`, oldest out first, and a save never
takes the disk below `MIN_FREE_BYTES` (or 5% of it, on a small disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, NamedTuple

GIB = 1 << 30
MIN_FREE_BYTES = GIB
MIN_FREE_SHARE = 0.05
_NAME = re.compile(r"^(?P<stem>.+)\.(?P<key>[0-9a-f]{16})\.slot(?P<slot>\d+)\.bin$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MODEL_FLAGS = ("-m", "--model")
ASIDE = ".old"  # a previous cache file moved out of a new save's way, being deleted


class SavedFile(NamedTuple):
    path: Path
    stem: str  # the model's part of the name
    key: str
    slot: int
    size: int
    mtime: float


def default_dir() -> str:
    """`$XDG_CACHE_HOME/llama-swap/warm`, else `~/.cache/llama-swap/warm`."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "llama-swap", "warm")


def stem_for(model_id: str) -> str:
    """A file-name-safe, collision-free stand-in for a model id (`org/m` and `org_m` differ).
    llama-server accepts only letters, digits, `-`, `_` and `.` in a slot file's name."""
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:6]
    return f"{_UNSAFE.sub('_', model_id)[:64]}-{digest}"


def model_file(argv: list[str]) -> str | None:
    """The model file a llama-server command loads (`-m`/`--model`), if it names one."""
    for index, arg in enumerate(argv):
        if arg in _MODEL_FLAGS and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def cache_key(model_id: str, argv_template: list[str]) -> str:
    """What a saved cache is valid for (see the module's docstring)."""
    path = model_file(argv_template)
    stat: list[int] | None = None
    if path is not None:
        try:
            found = os.stat(path)
            stat = [found.st_size, found.st_mtime_ns]
        except OSError:
            stat = None
    encoded = json.dumps({"id": model_id, "argv": argv_template, "model_file": [path, stat]}).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def file_name(stem: str, key: str, slot: int) -> str:
    return f"{stem}.{key}.slot{slot}.bin"


def scan(directories: Iterable[str]) -> list[SavedFile]:
    """Every cache file in ``directories`` (not below them), oldest first."""
    found: list[SavedFile] = []
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            match = _NAME.match(entry.name)
            if match is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append(SavedFile(Path(entry.path), match["stem"], match["key"], int(match["slot"]),
                                   stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda f: f.mtime)


def set_aside(directories: Iterable[str]) -> list[Path]:
    """Cache files moved aside (`…bin.old`) and not yet deleted."""
    found: list[Path] = []
    for directory in directories:
        try:
            found += [Path(e.path) for e in os.scandir(directory) if e.name.endswith(".bin" + ASIDE)]
        except OSError:
            continue
    return found


def over_budget(files: list[SavedFile], budget: int) -> list[SavedFile]:
    """The files to delete, oldest first, until the rest fit in ``budget`` bytes."""
    total = sum(f.size for f in files)
    evict: list[SavedFile] = []
    for saved in sorted(files, key=lambda f: f.mtime):
        if total <= budget:
            break
        evict.append(saved)
        total -= saved.size
    return evict


def has_room(directory: str, wanted: int) -> bool:
    """Whether ``wanted`` bytes can be written in ``directory`` and leave the disk its floor."""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return False
    floor = min(MIN_FREE_BYTES, int(usage.total * MIN_FREE_SHARE))
    return usage.free - wanted >= floor


def remove(files: Iterable[SavedFile | Path]) -> int:
    """Delete files (already gone is fine); the bytes freed."""
    freed = 0
    for saved in files:
        path = saved.path if isinstance(saved, SavedFile) else saved
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        freed += size
    return freed
