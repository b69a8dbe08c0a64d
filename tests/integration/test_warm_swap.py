"""Warm swaps with fake upstreams that speak llama-server's slot API (`--slot-save-path`):
what is saved and restored around a swap, the time bound on a slow save, the warning when
restores stop paying, the `--slot-save-path` rule, and what /metrics and /api/models show.
The same with the real llama-server is in tests/e2e/test_warm_swap.py."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FAKE_UPSTREAM, fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until


def warm_config(tmp_path: Path, a_switches: dict[str, Any] | None = None, extra: str = "") -> str:
    saves = tmp_path / "saves"
    saves.mkdir(exist_ok=True)
    return f"""
healthCheckTimeout: 15
warmSwap: true
warmSwapDir: {json.dumps(str(tmp_path / "warm"))}
{extra}
models:
  alpha:
    cmd: {fake_cmd(name="alpha", slot_save_path=str(saves), **(a_switches or {}))}
  beta:
    cmd: {fake_cmd(name="beta")}
"""


def chat(service: RunningService, model: str) -> Any:
    return service.openai().chat.completions.create(model=model, messages=HI)


def last_row(service: RunningService, model: str) -> dict[str, Any]:
    return service.http.get("/api/metrics/activity", params={"model": model, "limit": 1}).json()["data"][0]


def metric(service: RunningService, line_start: str) -> float:
    for line in service.http.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {line_start} in /metrics")


def test_a_swap_saves_the_slot_and_the_next_start_restores_it(start_service, tmp_path: Path) -> None:
    service = start_service(warm_config(tmp_path))
    chat(service, "alpha")
    chat(service, "beta")  # a swap: alpha's slot is saved before it stops
    [saved] = (tmp_path / "saves").iterdir()
    assert saved.name.startswith("alpha-") and saved.name.endswith(".slot0.bin")
    answer = chat(service, "alpha")  # started again: restored before this request was let through
    assert answer.model_extra["timings"]["cache_n"] > 0
    assert last_row(service, "alpha")["cached_tokens"] == answer.model_extra["timings"]["cache_n"]
    assert metric(service, 'llamaswap_warm_swap_restore_hits_total{model="alpha"}') == 1
    assert metric(service, 'llamaswap_warm_swap_saved_bytes_total{model="alpha"}') == saved.stat().st_size
    assert metric(service, 'llamaswap_warm_swap_restore_seconds_count{model="alpha"}') == 1
    assert metric(service, 'llamaswap_warm_swap_cache_bytes{model="alpha"}') == saved.stat().st_size
    models = {m["id"]: m for m in service.http.get("/api/models").json()}
    assert models["alpha"]["warm_cache_bytes"] == saved.stat().st_size
    assert models["beta"]["warm_cache_bytes"] is None  # on, but its command is no llama-server
    assert "warm swap: restored slot 0" in service.log()


def test_a_slow_save_is_abandoned_and_the_swap_goes_on(start_service, tmp_path: Path) -> None:
    service = start_service(warm_config(tmp_path, {"slot_save_delay": 30}, "warmSwapTimeout: 0.3"))
    chat(service, "alpha")
    assert chat(service, "beta").choices[0].message.content == "hello from beta"
    assert "saving its KV cache took longer than 0.3s (warmSwapTimeout); stopping it without" in service.log()
    assert list((tmp_path / "saves").iterdir()) == []  # no half-written file left to restore
    assert chat(service, "alpha").model_extra["timings"]["cache_n"] == 0


def test_restores_that_do_not_pay_are_counted_and_warned_about(start_service, tmp_path: Path) -> None:
    service = start_service(warm_config(tmp_path, {"restore_noop": True}))
    chat(service, "alpha")
    for _ in range(3):
        chat(service, "beta")
        assert chat(service, "alpha").model_extra["timings"]["cache_n"] == 0
    assert metric(service, 'llamaswap_warm_swap_restore_misses_total{model="alpha"}') == 3
    assert wait_until(lambda: "[alpha] warm swaps are not paying" in service.log())
    assert "llama.cpp issue #26676" in service.log()


def test_an_unreadable_saved_cache_is_deleted_and_the_model_serves(start_service, tmp_path: Path) -> None:
    service = start_service(warm_config(tmp_path))
    chat(service, "alpha")
    chat(service, "beta")
    [saved] = (tmp_path / "saves").iterdir()
    saved.write_bytes(b"not a slot file")
    answer = chat(service, "alpha")
    assert answer.choices[0].message.content == "hello from alpha"
    assert answer.model_extra["timings"]["cache_n"] == 0
    assert "invalid slot save file; the file is deleted" in service.log()
    assert not saved.exists()


def test_the_budget_keeps_the_newest_caches(start_service, tmp_path: Path) -> None:
    # each save of the fake is 100 bytes per token; a budget of 1 MB is far more than one,
    # so put an old 2 MB file of another model beside it: it goes first
    warm = tmp_path / "warm" / "other-000000"
    warm.mkdir(parents=True)
    old = warm / f"other-000000.{'0' * 16}.slot0.bin"
    old.write_bytes(b"x" * (2 << 20))
    os.utime(old, (1, 1))
    service = start_service(warm_config(tmp_path, extra="warmSwapMaxMB: 1"))
    chat(service, "alpha")
    chat(service, "beta")
    assert not old.exists()
    assert len(list((tmp_path / "saves").iterdir())) == 1
    assert "to stay within warmSwapMaxMB (1)" in service.log()


@pytest.fixture
def llama_server_named(tmp_path: Path) -> Path:
    """The fake upstream under the name `llama-server` (the rule looks at the command's name)."""
    script = tmp_path / "bin" / "llama-server"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nexec {json.dumps(sys.executable)} {json.dumps(str(FAKE_UPSTREAM))} \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def argv_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


def test_a_llama_server_without_a_save_path_gets_one_only_with_warm_swaps(
    start_service, tmp_path: Path, llama_server_named: Path,
) -> None:
    command = f"{llama_server_named} --port ${{PORT}} --name"
    service = start_service(f"""
healthCheckTimeout: 15
warmSwapDir: {json.dumps(str(tmp_path / "warm"))}
models:
  warm:
    cmd: {command} warm
    warmSwap: true
  cold:
    cmd: {command} cold
""")
    chat(service, "warm")
    argv = argv_of(service.pid_of("warm"))
    given = argv[argv.index("--slot-save-path") + 1]
    assert Path(given).parent == tmp_path / "warm" and Path(given).name.startswith("warm-")
    chat(service, "cold")
    assert "--slot-save-path" not in argv_of(service.pid_of("cold"))
    assert len(list(Path(given).iterdir())) == 1  # saved into the directory it was given
    assert chat(service, "warm").model_extra["timings"]["cache_n"] > 0
