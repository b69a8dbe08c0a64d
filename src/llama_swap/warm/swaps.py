"""Warm swaps carried out: save a model's slots before it stops, restore them once it is
healthy again, and tell whether the restores pay.

`WarmSwaps` is one per service. A `ModelProcess` asks it for the command to run (`plan`: the
`--slot-save-path` rule of `command.py` and the cache key of `files.py`), then calls `restore`
between healthy and ready and `save` between stopping and the signal; both are bounded by
`warmSwapTimeout` and never fail a start or a stop — a cache is an optimisation, so any
failure is a warning and the model goes on without it. `observe` reads the `cache_n` of the
first request after a restore: a restore that reported success but left the cache unused
(llama.cpp issue #26676 on some builds) is a miss, and misses in a row are warned about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import aiohttp

from llama_swap.config import Config, ModelConfig
from llama_swap.observe.usage import Usage
from llama_swap.warm import files, slots
from llama_swap.warm.command import takes_part, with_save_path

log = logging.getLogger("llama_swap.warm")

MISSES_WARNED = 3  # restores in a row followed by a request with cache_n 0 before a warning
MB = 1 << 20


class WarmRun(NamedTuple):
    """One run of a model's server with warm swaps: where it saves, and what its caches are valid for."""

    stem: str
    key: str
    directory: str


@dataclass
class WarmStats:
    """What warm swaps did for one model since the service started (Prometheus reads it)."""

    saves: int = 0  # stops that saved something, and the time those saves took (listing included)
    save_seconds: float = 0.0
    saved_bytes: int = 0
    restores: int = 0  # starts that restored something, and the time that took
    restore_seconds: float = 0.0
    restored_bytes: int = 0
    hits: int = 0
    misses: int = 0
    tokens_avoided: int = 0
    misses_in_a_row: int = 0


class WarmSwaps:
    """The service's warm swaps (see the module's docstring)."""

    def __init__(self, config: Config, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.stats: dict[str, WarmStats] = {}
        self._pending: dict[str, int] = {}  # model -> tokens restored, until its first request reports cache_n
        self._bytes_per_token: dict[str, float] = {}  # learned from saves: the room a save needs
        self._deleting: set[asyncio.Future[int]] = set()  # files set aside, being deleted in a thread
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a (re)loaded config's settings; caches already on disk stay."""
        self.directory = os.path.abspath(os.path.expanduser(config.warm_swap_dir or files.default_dir()))
        self.budget = config.warm_swap_max_mb * MB
        self.timeout = config.warm_swap_timeout
        self._dirs = {os.path.join(self.directory, entry) for entry in _subdirs(self.directory)}
        files.remove(files.set_aside(self._dirs))  # left by a service that died while deleting them

    def plan(self, model: ModelConfig) -> tuple[list[str], WarmRun | None]:
        """The command to start ``model`` with, and its warm run (None: no warm swaps)."""
        argv = model.argv
        if not takes_part(model.warm_swap, argv):
            return argv, None
        stem = files.stem_for(model.id)
        argv, directory = with_save_path(argv, os.path.join(self.directory, stem))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            log.warning("[%s] warm swaps off for this run: cannot create %s: %s", model.id, directory, exc)
            return model.argv, None
        self._dirs.add(directory)
        return argv, WarmRun(stem, files.cache_key(model.id, model.argv_template), directory)

    # ------------------------------------------------------------------ save
    async def save(self, model: str, run: WarmRun, base: str) -> None:
        """Save every slot holding tokens, within the time bound; never raises."""
        writing: list[str] = []
        started = time.monotonic()
        saved = 0
        try:
            async with asyncio.timeout(self.timeout):
                saved = await self._save(model, run, base, writing)
        except TimeoutError:
            files.remove(Path(run.directory) / name for name in writing)  # cut short: unreadable
            log.warning("[%s] warm swap: saving its KV cache took longer than %ss (warmSwapTimeout); "
                        "stopping it without", model, self.timeout)
        except (slots.SlotError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("[%s] warm swap: its KV cache was not saved: %s", model, exc)
        finally:
            self._keep_budget()
        if saved:
            stats = self._stats(model)
            stats.saves += 1
            stats.save_seconds += time.monotonic() - started
            stats.saved_bytes += saved

    async def _save(self, model: str, run: WarmRun, base: str, writing: list[str]) -> int:
        """The bytes saved."""
        self._discard_stale(model, run)
        listed = await slots.list_slots(self._session, base)
        per_token = self._bytes_per_token.get(model, 0.0)
        written = 0
        for slot in slots.to_save(listed):
            tokens = next(int(s.get("n_prompt_tokens") or 0) for s in listed if s.get("id") == slot)
            if not files.has_room(run.directory, int(tokens * per_token)):
                log.warning("[%s] warm swap: slot %d not saved: too little free disk space in %s",
                            model, slot, run.directory)
                continue
            name = files.file_name(run.stem, run.key, slot)
            self._set_aside(Path(run.directory) / name)
            writing.append(name)
            began = time.monotonic()
            moved = await slots.save(self._session, base, slot, name)
            writing.remove(name)
            written += moved.size
            if moved.tokens > 0:
                self._bytes_per_token[model] = moved.size / moved.tokens
            log.info("[%s] warm swap: saved slot %d (%d tokens, %.1f MB) in %.0f ms", model, slot, moved.tokens,
                     moved.size / MB, (time.monotonic() - began) * 1000)
        return written

    # --------------------------------------------------------------- restore
    async def restore(self, model: str, run: WarmRun, base: str) -> None:
        """Restore what was saved for this model and command, within the time bound; never raises."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await self._restore(model, run, base)
        except TimeoutError:
            log.warning("[%s] warm swap: restoring its KV cache took longer than %ss (warmSwapTimeout); "
                        "serving without it", model, self.timeout)
        except (slots.SlotError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("[%s] warm swap: its KV cache was not restored: %s", model, exc)
        if model in self._pending:
            stats = self._stats(model)
            stats.restores += 1
            stats.restore_seconds += time.monotonic() - started

    async def _restore(self, model: str, run: WarmRun, base: str) -> None:
        self._pending.pop(model, None)
        saved = self._discard_stale(model, run)
        if not saved:
            return
        stats = self._stats(model)
        tokens = 0
        for cache in saved:  # the key covers the command, so its slots (`--parallel`) are the same
            began = time.monotonic()
            try:
                moved = await slots.restore(self._session, base, cache.slot, cache.path.name)
            except slots.SlotError as exc:
                files.remove([cache])  # unreadable (e.g. cut short by a stop): useless from now on
                log.warning("[%s] warm swap: %s; the file is deleted", model, exc)
                continue
            stats.restored_bytes += moved.size
            tokens += moved.tokens
            log.info("[%s] warm swap: restored slot %d (%d tokens, %.1f MB) in %.0f ms", model, cache.slot,
                     moved.tokens, moved.size / MB, (time.monotonic() - began) * 1000)
        if tokens:
            self._pending[model] = tokens

    # --------------------------------------------------------------- observe
    def observe(self, model: str, usage: Usage) -> None:
        """A request to ``model`` ended with ``usage``: the first one after a restore that
        reports its cached tokens (llama.cpp's `cache_n`) tells whether the restore paid."""
        cached_tokens = usage.cached_tokens
        if cached_tokens is None or model not in self._pending:
            return
        del self._pending[model]
        stats = self._stats(model)
        if cached_tokens > 0:
            stats.hits += 1
            stats.tokens_avoided += cached_tokens
            stats.misses_in_a_row = 0
            return
        stats.misses += 1
        stats.misses_in_a_row += 1
        if stats.misses_in_a_row == MISSES_WARNED:
            log.warning("[%s] warm swaps are not paying: after each of the last %d restores the next request "
                        "reported cache_n 0, so its whole prompt was computed again. Some llama.cpp builds "
                        "report a restore as done without using it (llama.cpp issue #26676): update "
                        "llama-server, or set warmSwap: false for this model", model, MISSES_WARNED)

    def cache_sizes(self, models: Iterable[str]) -> dict[str, int]:
        """The bytes of saved caches on disk of those of ``models`` that have some (one scan)."""
        stems = {files.stem_for(model): model for model in models}
        sizes: dict[str, int] = {}
        if not stems:
            return sizes
        for saved in files.scan(self._dirs):
            model = stems.get(saved.stem)
            if model is not None:
                sizes[model] = sizes.get(model, 0) + saved.size
        return sizes

    # ----------------------------------------------------------------- files
    def _discard_stale(self, model: str, run: WarmRun) -> list[files.SavedFile]:
        """Delete this model's caches made for another command or model file; the rest."""
        mine = [f for f in files.scan([run.directory]) if f.stem == run.stem]
        stale = [f for f in mine if f.key != run.key]
        if stale:
            files.remove(stale)
            log.info("[%s] warm swap: discarded %d saved cache file(s): its command or model file changed",
                     model, len(stale))
        return [f for f in mine if f.key == run.key]

    def _set_aside(self, path: Path) -> None:
        """Move the slot's previous file out of the way and delete it in a thread: llama-server
        writes a new file in about half the time it takes to overwrite one (measured: 17 ms
        against 35–41 ms for 45 MB), and the stop is not kept waiting for the deletion."""
        aside = path.with_name(path.name + files.ASIDE)
        try:
            path.rename(aside)
        except FileNotFoundError:
            return
        task = asyncio.get_running_loop().run_in_executor(None, files.remove, [aside])
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    def _keep_budget(self) -> None:
        evicted = files.over_budget(files.scan(self._dirs), self.budget)
        if evicted:
            freed = files.remove(evicted)
            log.info("warm swap: deleted %d oldest cache file(s), %.1f MB, to stay within warmSwapMaxMB (%d)",
                     len(evicted), freed / MB, self.budget // MB)

    def _stats(self, model: str) -> WarmStats:
        stats = self.stats.get(model)
        if stats is None:
            stats = self.stats[model] = WarmStats()
        return stats


def _subdirs(directory: str) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []
