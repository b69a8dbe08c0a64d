"""`GET /api/hardware`: what the service runs on, detected once at start-up in Go's shape
(`hw.HardwareSnapshot`, schema version 1).

Only cheap sources: a few files under /proc, /etc and /sys, and one bounded `nvidia-smi`
query when it is installed. The parsers are pure functions of the files' text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llama_swap.observe.nvidia import NVIDIA_SMI, NvidiaSmiError, number, query, rows
from llama_swap.observe.system import MIB, parse_meminfo

log = logging.getLogger("llama_swap.hardware")

SCHEMA_VERSION = 1
NVIDIA_TIMEOUT = 10.0
ACCELERATOR_FIELDS = "index,name,uuid,pci.bus_id,memory.total,driver_version,power.limit"
_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "armv7",
                  "ppc64le": "ppc64le", "riscv64": "riscv64", "s390x": "s390x"}
_OS_FAMILIES = {"linux": "linux", "darwin": "macos", "win32": "windows", "freebsd": "freebsd"}
_CONTAINERS = (("docker", "Docker"), ("lxc", "LXC"), ("libpod", "Podman"), ("kubepods", "Kubernetes"))
_UNKNOWN = {"", "n/a", "unknown", "[not supported]", "none"}


class HardwareError(Exception):
    """Detection failed: `/api/hardware` answers 503 with this reason."""


def text(value: str | None) -> str | None:
    """A value, or None for the placeholders tools print when they do not know."""
    value = (value or "").strip()
    return None if value.lower() in _UNKNOWN else value


def architecture(machine: str) -> dict[str, Any]:
    name = _ARCHITECTURES.get(machine.lower(), "other")
    return {"name": name, "raw_name": machine if machine != name else None}


def operating_system(family_raw: str, os_release: str, kernel: str) -> dict[str, Any]:
    """Family from the platform; name and version as gopsutil reads them (`ID`, `VERSION_ID`)."""
    fields = dict(line.split("=", 1) for line in os_release.splitlines() if "=" in line)
    family = _OS_FAMILIES.get(family_raw, "other")
    found = {
        "family": family,
        "name": text(fields.get("ID", "").strip('"')),
        "version": text(fields.get("VERSION_ID", "").strip('"')),
        "kernel": text(kernel),
    }
    if family == "other":
        found["raw_family"] = family_raw
    return found


def environment(kernel: str, root: Path) -> dict[str, Any]:
    """Native, container, virtual machine or WSL, from marker files and the CPU's
    `hypervisor` flag; `unknown` when none of them can tell."""
    if "microsoft" in kernel.lower() or "wsl" in kernel.lower():
        return _environment("wsl", "WSL")
    if (root / ".dockerenv").exists():
        return _environment("container", "Docker")
    if (root / "run/.containerenv").exists():
        return _environment("container", "Podman")
    cgroup = _read(root / "proc/1/cgroup")
    for marker, name in _CONTAINERS:
        if marker in cgroup:
            return _environment("container", name)
    flags = next((line for line in _read(root / "proc/cpuinfo").splitlines() if line.startswith("flags")), None)
    if flags is None:
        return _environment("unknown")  # no x86 flags line: the CPU cannot tell
    if "hypervisor" in flags.split():
        vendor = text(_read(root / "sys/class/dmi/id/sys_vendor")) or text(_read(root / "sys/class/dmi/id/product_name"))
        return _environment("virtual_machine", vendor)
    return _environment("native")


def _environment(kind: str, name: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "name": name, "version": None}


def cpu(cpuinfo: str, logical: int | None) -> dict[str, Any]:
    """Vendor and model of the first CPU; sockets and physical cores from the distinct
    `physical id` and (`physical id`, `core id`) pairs, when /proc/cpuinfo lists them."""
    vendor = model = None
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    for block in cpuinfo.split("\n\n"):
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        vendor = vendor or text(fields.get("vendor_id"))
        model = model or text(fields.get("model name"))
        if "physical id" in fields:
            sockets.add(fields["physical id"])
            if "core id" in fields:
                cores.add((fields["physical id"], fields["core id"]))
    physical = len(cores) if cores and (logical is None or len(cores) <= logical) else None
    return {
        "vendor": vendor,
        "model": model,
        "socket_count": len(sockets) or None,
        "physical_core_count": physical,
        "logical_thread_count": logical,
    }


def memory_capacity(meminfo: str, cgroup_limits: list[str]) -> int:
    """RAM in bytes, or a container's memory limit when that is lower (as the Go version)."""
    capacity = parse_meminfo(meminfo).get("MemTotal", 0)
    for limit in cgroup_limits:
        limit = limit.strip()
        if limit.isdigit() and 0 < int(limit) < capacity:
            capacity = int(limit)
    return capacity


def nvidia_accelerators(csv_text: str) -> list[dict[str, Any]]:
    """One accelerator per row of an `ACCELERATOR_FIELDS` query, ordered by PCI bus id."""
    found = []
    for row in rows(csv_text):
        if len(row) != 7:
            raise HardwareError(f"nvidia-smi printed {len(row)} columns where 7 were asked for")
        _, name, _, bus_id, memory_mib, driver, power_limit = row
        capacity = number(memory_mib)
        limit = number(power_limit)
        found.append((bus_id.lower(), name, {
            "kind": "gpu",
            "vendor": "NVIDIA",
            "model": text(name),
            "architecture": None,
            "memory": {"kind": "dedicated", "capacity_bytes": int(capacity * MIB) if capacity else None},
            "driver": {"name": "NVIDIA", "version": text(driver)} if text(driver) else None,
            "power_limit_watts": limit if limit else None,
        }))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return [{"index": index, **accelerator} for index, (_, _, accelerator) in enumerate(found)]


async def detect(version: str, root: Path = Path("/")) -> dict[str, Any]:
    """The snapshot; HardwareError when even the memory size cannot be read."""
    kernel = platform.release()
    capacity = memory_capacity(
        _read(root / "proc/meminfo"),
        [_read(root / "sys/fs/cgroup/memory.max"), _read(root / "sys/fs/cgroup/memory/memory.limit_in_bytes")],
    )
    if capacity <= 0:
        raise HardwareError("cannot read the memory size from /proc/meminfo")
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": datetime.now(timezone.utc),
        "capture": {"scope": "inference_host", "method": "detected",
                    "detector": {"name": "llama-swap", "version": version}},
        "architecture": architecture(platform.machine()),
        "operating_system": operating_system(sys.platform, _read(root / "etc/os-release"), kernel),
        "environment": environment(kernel, root),
        "cpu": cpu(_read(root / "proc/cpuinfo"), os.cpu_count()),
        "memory": {"capacity_bytes": capacity},
        "accelerators": await _nvidia(),
    }


async def _nvidia() -> list[dict[str, Any]]:
    """NVIDIA GPUs, or none when nvidia-smi is absent or fails (logged: the rest still counts)."""
    binary = shutil.which(NVIDIA_SMI)
    if binary is None:
        return []
    try:
        return nvidia_accelerators(await query(binary, ACCELERATOR_FIELDS, NVIDIA_TIMEOUT))
    except (NvidiaSmiError, HardwareError) as exc:
        log.warning("hardware: no GPU details: %s", exc)
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class HardwareProbe:
    """The snapshot, detected once in the background at start-up; requests wait for it."""

    def __init__(self) -> None:
        self._task: asyncio.Task[dict[str, Any] | None] | None = None
        self.error = "not detected yet"

    def start(self, version: str) -> None:
        self._task = asyncio.create_task(self._detect(version), name="hardware detection")

    async def snapshot(self) -> dict[str, Any] | None:
        """The snapshot, or None when detection failed (`error` says why)."""
        if self._task is None:
            return None
        return await asyncio.shield(self._task)  # a client that leaves does not cancel detection

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _detect(self, version: str) -> dict[str, Any] | None:
        try:
            return await detect(version)
        except HardwareError as exc:
            self.error = str(exc)
            log.warning("hardware detection failed: %s", exc)
            return None
