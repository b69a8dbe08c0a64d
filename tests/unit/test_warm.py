"""Warm swaps' decisions, without processes: which commands take part and where they save,
what a saved cache is valid for, the disk budget, which slots are saved, hits and misses."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiohttp
import pytest

from llama_swap.config import load_config_text
from llama_swap.observe.usage import Usage
from llama_swap.warm import files
from llama_swap.warm.command import save_path_in, takes_part, with_save_path
from llama_swap.warm.slots import to_save
from llama_swap.warm.swaps import MISSES_WARNED, WarmSwaps

LLAMA = ["/opt/llama/bin/llama-server", "-m", "/m/a.gguf", "--port", "${PORT}"]


@pytest.mark.parametrize("argv, expected", [
    (LLAMA, True),
    (["docker", "run", "--rm", "img", "llama-server", "-m", "x"], True),
    (["python", "fake.py", "--slot-save-path", "/d"], True),  # anything with the flag: its own API then
    (["vllm", "serve", "m"], False),
    (["/opt/llama-server-wrapper.sh"], False),
])
def test_which_commands_take_part(argv: list[str], expected: bool) -> None:
    assert takes_part(True, argv) is expected
    assert takes_part(False, argv) is False
    assert takes_part(None, argv) is False


def test_a_command_keeps_its_own_save_path_else_gets_one() -> None:
    assert with_save_path([*LLAMA, "--slot-save-path", "/mine"], "/ours") == ([*LLAMA, "--slot-save-path", "/mine"],
                                                                             "/mine")
    assert with_save_path([*LLAMA, "--slot-save-path=/mine"], "/ours")[1] == "/mine"
    assert with_save_path(LLAMA, "/ours") == ([*LLAMA, "--slot-save-path", "/ours"], "/ours")
    assert save_path_in(["llama-server", "--slot-save-path"]) is None  # no value: not a path


def test_the_model_setting_falls_back_to_the_global_one() -> None:
    config = load_config_text(
        "warmSwap: true\nmodels:\n"
        "  a:\n    cmd: llama-server --port ${PORT}\n"
        "  b:\n    cmd: llama-server --port ${PORT}\n    warmSwap: false\n", "c.yaml")
    assert config.models["a"].warm_swap is True and config.models["b"].warm_swap is False
    assert config.warm_swap_max_mb == 20480 and config.warm_swap_timeout == 10


def test_a_cache_is_valid_for_one_model_command_and_model_file(tmp_path: Path) -> None:
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"weights")
    argv = ["llama-server", "-m", str(gguf), "--port", "${PORT}", "-c", "4096"]
    key = files.cache_key("a", argv)
    assert files.cache_key("a", argv) == key
    assert files.cache_key("b", argv) != key
    assert files.cache_key("a", [*argv[:-1], "8192"]) != key  # another context size
    os.utime(gguf, ns=(1, 1))
    assert files.cache_key("a", argv) != key  # the model file was replaced


def test_model_ids_make_distinct_safe_file_names() -> None:
    first, second = files.stem_for("org/model:q4"), files.stem_for("org_model_q4")
    assert first != second
    assert all(c.isalnum() or c in "-_" for c in first)
    name = files.file_name(first, "0123456789abcdef", 3)
    assert name == f"{first}.0123456789abcdef.slot3.bin"


def test_scan_reads_back_what_was_named(tmp_path: Path) -> None:
    stem = files.stem_for("m")
    (tmp_path / files.file_name(stem, "0123456789abcdef", 1)).write_bytes(b"12345")
    (tmp_path / "unrelated.bin").write_bytes(b"x")
    (tmp_path / files.file_name(stem, "0123456789abcdef", 2)).mkdir()
    [found] = files.scan([str(tmp_path), str(tmp_path / "missing")])
    assert (found.stem, found.key, found.slot, found.size) == (stem, "0123456789abcdef", 1, 5)


def test_the_budget_removes_the_oldest_first(tmp_path: Path) -> None:
    def saved(name: str, size: int, mtime: float) -> files.SavedFile:
        return files.SavedFile(tmp_path / name, "s", "k", 0, size, mtime)

    old, middle, new = saved("old", 40, 1), saved("middle", 40, 2), saved("new", 40, 3)
    assert files.over_budget([new, old, middle], 120) == []
    assert files.over_budget([new, old, middle], 100) == [old]
    assert files.over_budget([new, old, middle], 10) == [old, middle, new]


def test_free_space_keeps_a_floor(tmp_path: Path) -> None:
    assert files.has_room(str(tmp_path), 0)
    assert not files.has_room(str(tmp_path), 1 << 60)
    assert not files.has_room(str(tmp_path / "missing"), 0)


def test_only_slots_holding_tokens_and_not_busy_are_saved() -> None:
    listed = [
        {"id": 0, "n_ctx": 1024, "is_processing": False},  # never used
        {"id": 1, "is_processing": False, "n_prompt_tokens": 45},
        {"id": 2, "is_processing": True, "n_prompt_tokens": 900},  # a request is running in it
        {"id": 3, "is_processing": False, "n_prompt_tokens": 0},
    ]
    assert to_save(listed) == [1]


async def test_the_first_request_after_a_restore_tells_a_hit_from_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config_text("models:\n  m:\n    cmd: llama-server --port ${PORT}\n", "c.yaml")
    async with aiohttp.ClientSession() as session:
        warm = WarmSwaps(config, session)
    warm._pending["m"] = 1000
    warm.observe("m", Usage(cached_tokens=None))  # an answer without cache_n (an embedding) tells nothing
    warm.observe("m", Usage(cached_tokens=990))
    warm.observe("m", Usage(cached_tokens=990))  # not the first after a restore: not counted
    stats = warm.stats["m"]
    assert (stats.hits, stats.misses, stats.tokens_avoided) == (1, 0, 990)
    with caplog.at_level(logging.WARNING, "llama_swap.warm"):
        for _ in range(MISSES_WARNED):
            warm._pending["m"] = 1000
            warm.observe("m", Usage(cached_tokens=0))
    assert stats.misses == MISSES_WARNED
    assert [r.getMessage() for r in caplog.records if "not paying" in r.getMessage()] != []


async def test_files_set_aside_by_a_service_that_died_are_deleted_at_start(tmp_path: Path) -> None:
    own = tmp_path / "warm" / files.stem_for("m")
    own.mkdir(parents=True)
    kept = own / files.file_name(files.stem_for("m"), "0123456789abcdef", 0)
    kept.write_bytes(b"cache")
    aside = own / (kept.name + files.ASIDE)
    aside.write_bytes(b"old cache")
    config = load_config_text(f"warmSwapDir: {tmp_path / 'warm'}\nmodels:\n  m:\n    cmd: llama-server --port ${{PORT}}\n",
                              "c.yaml")
    async with aiohttp.ClientSession() as session:
        WarmSwaps(config, session)
    assert kept.exists() and not aside.exists()
