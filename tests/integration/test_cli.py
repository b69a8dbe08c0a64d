"""The command line: Go-style and GNU-style flags, listen addresses, clear config errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from llama_swap import __version__
from tests.fakes import fake_cmd, free_port, wait_http
from tests.integration.conftest import wait_until

PYTHON_M = [sys.executable, "-m", "llama_swap"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("llama-swap")


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"startPort: 47100\nmodels:\n  m:\n    cmd: {fake_cmd(name='m')}\n")
    return path


@contextlib.contextmanager
def serving(argv: list[str], port: int) -> Iterator[str]:
    """Run the service with ``argv``; yield its loopback URL; SIGTERM it afterwards."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_http(f"{url}/health", timeout=20, proc=proc):
            proc.kill()
            raise AssertionError(f"service did not serve /health:\n{proc.communicate()[0].decode(errors='replace')}")
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0


@pytest.mark.parametrize("flag", ["-version", "--version"])
def test_version_prints_and_exits_0(flag: str) -> None:
    result = run([*PYTHON_M, flag])
    assert result.returncode == 0
    assert __version__ in result.stdout
    assert result.stderr == ""


def test_missing_config_is_one_line_naming_the_file(tmp_path: Path) -> None:
    result = run([*PYTHON_M, "--config", "missing.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing.yaml" in result.stderr
    assert "not found" in result.stderr


def test_default_config_is_config_yaml_in_the_working_directory(tmp_path: Path) -> None:
    result = run(PYTHON_M, cwd=tmp_path)
    assert result.returncode != 0
    assert "config.yaml" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    cmd: x --port ${PORT}\n    ttl: abc\n")
    result = run([*PYTHON_M, "-config", str(bad)])
    assert result.returncode != 0
    assert "models.m.ttl" in result.stderr
    assert "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_invalid_listen_address_is_a_clear_error(config: Path) -> None:
    result = run([*PYTHON_M, "-config", str(config), "-listen", "localhost"])
    assert result.returncode != 0
    assert "localhost" in result.stderr and "Traceback" not in result.stderr


def test_listen_port_only_serves_on_all_interfaces(config: Path) -> None:
    port = free_port()
    with serving([*PYTHON_M, "-config", str(config), "-listen", f":{port}"], port) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "models": {}}


def test_listen_host_port_and_the_console_script(config: Path) -> None:
    assert CONSOLE_SCRIPT.is_file() and os.access(CONSOLE_SCRIPT, os.X_OK)
    version = run([str(CONSOLE_SCRIPT), "-version"])
    assert version.returncode == 0 and __version__ in version.stdout
    port = free_port()
    with serving([str(CONSOLE_SCRIPT), "--config", str(config), "--listen", f"127.0.0.1:{port}"], port) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["m"]


def test_port_in_use_is_a_clear_error(config: Path) -> None:
    port = free_port()
    with serving([*PYTHON_M, "-config", str(config), "-listen", f"127.0.0.1:{port}"], port):
        result = run([*PYTHON_M, "-config", str(config), "-listen", f"127.0.0.1:{port}"])
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_tls_flags_serve_https(config: Path, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                "-days", "1", "-subj", "/CN=127.0.0.1"])
    assert made.returncode == 0, made.stderr
    port = free_port()
    argv = [*PYTHON_M, "-config", str(config), "-listen", f"127.0.0.1:{port}",
            "-tls-cert-file", str(cert), "-tls-key-file", str(key)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"https://127.0.0.1:{port}/health", verify=False, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(answers, timeout=20)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)  # plain HTTP is not served
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_tls_flags_must_come_together(config: Path) -> None:
    result = run([*PYTHON_M, "-config", str(config), "-tls-cert-file", "cert.pem"])
    assert result.returncode != 0
    assert "-tls-cert-file and -tls-key-file must be given together" in result.stderr


def test_config_dir_is_merged_after_the_config_file(config: Path, tmp_path: Path) -> None:
    extra = tmp_path / "conf.d"
    extra.mkdir()
    (extra / "more.yaml").write_text(f"models:\n  n:\n    cmd: {fake_cmd(name='n')}\n")
    port = free_port()
    argv = [*PYTHON_M, "-config", str(config), "-config-dir", str(extra), "-listen", f"127.0.0.1:{port}"]
    with serving(argv, port) as url:
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["m", "n"]
