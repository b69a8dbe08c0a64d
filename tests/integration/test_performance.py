"""`performance` end to end: /api/performance, /api/hardware, the system series on /metrics,
the API key, a fake nvidia-smi on PATH, and reloads that change `performance`."""

from __future__ import annotations

import os
import random
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService, serving, wait_until
from tests.integration.test_reload import reload

SYS_FIELDS = {"timestamp", "cpu_util_per_core", "cpu_util_total", "mem_total_mb", "mem_used_mb", "mem_free_mb",
              "swap_total_mb", "swap_used_mb", "load_avg_1", "load_avg_5", "load_avg_15", "net_io"}
GPU_FIELDS = {"timestamp", "id", "name", "uuid", "temp_c", "vram_temp_c", "gpu_util_pct", "mem_util_pct",
              "mem_used_mb", "mem_total_mb", "fan_speed_pct", "power_draw_w"}
KEY = "sk-perf-test"
# Answers the two queries the service makes, as nvidia-smi does with one GPU.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=index,name,uuid,temperature.gpu,*)
    echo "0, NVIDIA GeForce RTX 4090, GPU-5f2e7c1a-3b8d-4e5f-9a0b-1c2d3e4f5a6b, 45, 12, 6144, 24564, 30, 65.43";;
  --query-gpu=index,name,uuid,pci.bus_id,*)
    echo "0, NVIDIA GeForce RTX 4090, GPU-5f2e7c1a-3b8d-4e5f-9a0b-1c2d3e4f5a6b, 00000000:01:00.0, 24564, 550.54.14, 450.00";;
  *) echo "unexpected $*" >&2; exit 9;;
esac
"""


def with_model(extra: str = "") -> str:
    return f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        {extra}"""


def test_samples_at_once_and_after_filters_them(start_service: Callable[[str], RunningService]) -> None:
    service = start_service(with_model("performance: {every: 5s}"))
    answer = service.http.get("/api/performance")
    assert answer.status_code == 200
    body = answer.json()
    assert body["enabled"] is True and body["gpu_stats"] == []
    [stat] = body["sys_stats"]  # taken at start-up: no 5 s wait
    assert set(stat) == SYS_FIELDS
    assert len(stat["cpu_util_per_core"]) == os.cpu_count()
    assert 0 < stat["mem_used_mb"] < stat["mem_total_mb"]
    assert all(set(io) == {"name", "bytes_recv", "bytes_sent"} and io["name"] != "lo" for io in stat["net_io"])

    taken = datetime.fromisoformat(stat["timestamp"])
    before = (taken - timedelta(seconds=1)).isoformat()
    assert len(service.http.get("/api/performance", params={"after": before}).json()["sys_stats"]) == 1
    later = (taken + timedelta(minutes=1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert service.http.get("/api/performance", params={"after": later}).json() == {
        "enabled": True, "sys_stats": [], "gpu_stats": []}

    bad = service.http.get("/api/performance", params={"after": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("invalid after 'yesterday'")


def test_metrics_have_the_system_series_beside_the_per_model_ones(start_service) -> None:
    service = start_service(with_model())
    assert service.chat("m").status_code == 200
    text = service.http.get("/metrics").text
    for series in ('llamaswap_cpu_util_percent{core="0"}', "llamaswap_memory_total_bytes ",
                   "llamaswap_memory_used_bytes ", "llamaswap_swap_total_bytes ", "llamaswap_swap_used_bytes ",
                   'llamaswap_load_average{interval="1m"}',
                   'llamaswap_requests_total{model="m",path="/v1/chat/completions",status="200"} 1.0',
                   'llamaswap_model_state{model="m",state="ready"} 1.0'):
        assert series in text, series
    assert "llamaswap_gpu_" not in text


def test_hardware_snapshot_shape(start_service) -> None:
    service = start_service(with_model())
    answer = service.http.get("/api/hardware")
    assert answer.status_code == 200
    snapshot = answer.json()
    assert set(snapshot) == {"schema_version", "captured_at", "capture", "architecture", "operating_system",
                             "environment", "cpu", "memory", "accelerators"}
    assert snapshot["schema_version"] == 1 and snapshot["capture"]["detector"]["name"] == "llama-swap"
    assert snapshot["operating_system"]["family"] == "linux"
    assert snapshot["environment"]["kind"] in {"native", "container", "virtual_machine", "wsl", "unknown"}
    assert snapshot["cpu"]["logical_thread_count"] == os.cpu_count()
    assert snapshot["memory"]["capacity_bytes"] > 0


def test_disabled_is_503_and_leaves_the_per_model_metrics(start_service) -> None:
    service = start_service(with_model("performance: {disabled: true}"))
    answer = service.http.get("/api/performance")
    assert (answer.status_code, answer.json()) == (503, {"enabled": False})
    text = service.http.get("/metrics").text
    assert "llamaswap_cpu_util_percent" not in text and "llamaswap_load_average" not in text
    assert 'llamaswap_model_state{model="m",state="stopped"} 1.0' in text
    assert service.http.get("/api/hardware").status_code == 200  # a snapshot, not the sampler


def test_the_endpoints_need_the_api_key(start_service) -> None:
    service = start_service(with_model(f"apiKeys: [{KEY}]"))
    for path in ("/api/performance", "/api/hardware"):
        assert service.http.get(path).status_code == 401
        assert service.http.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_gpus_through_nvidia_smi(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text(f"startPort: {random.randrange(10000, 32000, 50)}\n" + textwrap.dedent(with_model()))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with serving(config, tmp_path / "service.log", env=env) as service:
        def gpus() -> list[dict]:
            return service.http.get("/api/performance").json()["gpu_stats"]

        assert wait_until(lambda: len(gpus()) > 0), service.log()  # the first query runs right after start
        gpu = gpus()[0]
        assert set(gpu) == GPU_FIELDS
        assert (gpu["id"], gpu["name"], gpu["mem_used_mb"], gpu["power_draw_w"]) == (
            0, "NVIDIA GeForce RTX 4090", 6144, 65.43)
        text = service.http.get("/metrics").text
        assert ('llamaswap_gpu_memory_total_bytes{id="0",name="NVIDIA GeForce RTX 4090",'
                f'uuid="GPU-5f2e7c1a-3b8d-4e5f-9a0b-1c2d3e4f5a6b"}} {24564 * 1024 * 1024:.10e}') in text
        [accelerator] = service.http.get("/api/hardware").json()["accelerators"]
        assert accelerator["model"] == "NVIDIA GeForce RTX 4090"
        assert accelerator["memory"] == {"kind": "dedicated", "capacity_bytes": 24564 * 1024 * 1024}
        assert accelerator["driver"] == {"name": "NVIDIA", "version": "550.54.14"}
        assert "GPUs through nvidia-smi" in service.log()


def test_a_reload_applies_performance(start_service) -> None:
    service = start_service(with_model())
    assert service.http.get("/api/performance").status_code == 200

    reload(service, with_model("performance: {disabled: true}"))
    assert service.http.get("/api/performance").status_code == 503
    assert "llamaswap_cpu_util_percent" not in service.http.get("/metrics").text
    assert "performance: sampling disabled" in service.log()

    reload(service, with_model("performance: {every: 10s}"))
    body = service.http.get("/api/performance").json()
    assert body["enabled"] is True and len(body["sys_stats"]) == 1  # sampled again at once
    assert "llamaswap_cpu_util_percent" in service.http.get("/metrics").text
    assert "performance: sampling every 10s" in service.log()
