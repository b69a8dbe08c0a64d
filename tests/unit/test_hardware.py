"""The `/api/hardware` snapshot's parts, from recorded files and nvidia-smi output."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_swap.observe.hardware import (
    HardwareError,
    architecture,
    cpu,
    detect,
    environment,
    memory_capacity,
    nvidia_accelerators,
    operating_system,
)

CPUINFO_2_SOCKETS = "\n\n".join(
    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    f"physical id\t: {n // 4}\ncore id\t\t: {n % 4 // 2}\nflags\t\t: fpu vme sse"
    for n in range(8)
)  # 2 sockets x 2 cores x 2 threads
CPUINFO_ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n"
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
# nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,driver_version,power.limit
#            --format=csv,noheader,nounits, listed in index order (not bus order)
NVIDIA_ACCELERATORS = """\
0, NVIDIA GeForce RTX 4090, GPU-5f2e7c1a, 00000000:41:00.0, 24564, 550.54.14, 450.00
1, NVIDIA GeForce RTX 3090, GPU-0a1b2c3d, 00000000:01:00.0, 24576, 550.54.14, [N/A]
"""


def test_architecture_names() -> None:
    assert architecture("x86_64") == {"name": "x86_64", "raw_name": None}
    assert architecture("aarch64") == {"name": "arm64", "raw_name": "aarch64"}
    assert architecture("mips") == {"name": "other", "raw_name": "mips"}


def test_operating_system_from_os_release() -> None:
    assert operating_system("linux", OS_RELEASE, "6.1.0-18-amd64") == {
        "family": "linux", "name": "debian", "version": "12", "kernel": "6.1.0-18-amd64"}
    assert operating_system("sunos5", "", "")["raw_family"] == "sunos5"


def test_cpu_counts_sockets_cores_and_threads() -> None:
    assert cpu(CPUINFO_2_SOCKETS, 8) == {
        "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        "socket_count": 2, "physical_core_count": 4, "logical_thread_count": 8}
    assert cpu(CPUINFO_ARM, 2) == {"vendor": None, "model": None, "socket_count": None,
                                   "physical_core_count": None, "logical_thread_count": 2}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


@pytest.mark.parametrize(
    ("kernel", "files", "expected"),
    [
        ("5.15.90.1-microsoft-standard-WSL2", {}, ("wsl", "WSL")),
        ("6.1", {".dockerenv": ""}, ("container", "Docker")),
        ("6.1", {"run/.containerenv": ""}, ("container", "Podman")),
        ("6.1", {"proc/1/cgroup": "0::/kubepods/burstable/pod1/abc\n"}, ("container", "Kubernetes")),
        ("6.1", {"proc/1/cgroup": "0::/\n", "proc/cpuinfo": "flags\t: fpu hypervisor sse\n",
                 "sys/class/dmi/id/sys_vendor": "QEMU\n"}, ("virtual_machine", "QEMU")),
        ("6.1", {"proc/cpuinfo": "flags\t: fpu sse\n"}, ("native", None)),
        ("6.1", {"proc/cpuinfo": CPUINFO_ARM}, ("unknown", None)),
    ],
)
def test_environment(tmp_path: Path, kernel: str, files: dict[str, str], expected: tuple[str, str | None]) -> None:
    found = environment(kernel, write(tmp_path, files))
    assert (found["kind"], found["name"]) == expected


def test_memory_capacity_is_the_container_limit_when_lower() -> None:
    meminfo = "MemTotal:       24684852 kB\n"
    assert memory_capacity(meminfo, ["max\n", ""]) == 24684852 * 1024
    assert memory_capacity(meminfo, ["", "9223372036854771712\n"]) == 24684852 * 1024
    assert memory_capacity(meminfo, ["4294967296\n", ""]) == 4294967296
    assert memory_capacity("", []) == 0


def test_nvidia_accelerators_from_recorded_output() -> None:
    first, second = nvidia_accelerators(NVIDIA_ACCELERATORS)
    assert first == {
        "index": 0, "kind": "gpu", "vendor": "NVIDIA", "model": "NVIDIA GeForce RTX 3090", "architecture": None,
        "memory": {"kind": "dedicated", "capacity_bytes": 24576 * 1024 * 1024},
        "driver": {"name": "NVIDIA", "version": "550.54.14"}, "power_limit_watts": None,
    }  # ordered by PCI bus, as the Go version orders them
    assert (second["index"], second["model"], second["power_limit_watts"]) == (1, "NVIDIA GeForce RTX 4090", 450.0)
    with pytest.raises(HardwareError, match="3 columns"):
        nvidia_accelerators("0, a, b\n")


async def test_detect_without_memory_fails_and_without_nvidia_smi_lists_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(HardwareError, match="memory size"):
        await detect("1.2.3", tmp_path)
    write(tmp_path, {"proc/meminfo": "MemTotal: 1024 kB\n", "proc/cpuinfo": CPUINFO_2_SOCKETS,
                     "etc/os-release": OS_RELEASE})
    snapshot = await detect("1.2.3", tmp_path)
    assert snapshot["capture"] == {"scope": "inference_host", "method": "detected",
                                   "detector": {"name": "llama-swap", "version": "1.2.3"}}
    assert snapshot["memory"] == {"capacity_bytes": 1024 * 1024}
    assert snapshot["cpu"]["socket_count"] == 2 and snapshot["operating_system"]["name"] == "debian"
    assert snapshot["environment"]["kind"] == "native" and snapshot["accelerators"] == []
