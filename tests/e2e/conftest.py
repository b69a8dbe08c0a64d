"""The real llama-server and a real model for the end-to-end tests.

`scripts/setup-llama` installs them into a cache (compiling llama.cpp the first time, about
12 minutes on two cores; about a second once done). A failed setup fails every end-to-end
test with the script's output: these tests are never skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "scripts" / "setup-llama"
SETUP_TIMEOUT = 40 * 60  # the first run compiles llama.cpp
OUTPUT_TAIL = 6000


@dataclass(frozen=True)
class LlamaInstall:
    server: Path  # the llama-server binary
    gguf: Path  # SmolLM2-135M-Instruct


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "...\n" + text[-OUTPUT_TAIL:]


def _setup_failed(reason: str, stdout: str, stderr: str) -> None:
    pytest.fail(
        f"scripts/setup-llama {reason}\n--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}",
        pytrace=False,
    )


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def run_setup_llama() -> LlamaInstall:
    """Run scripts/setup-llama (bounded) and read the paths it prints."""
    proc = subprocess.Popen(
        [sys.executable, str(SETUP_SCRIPT)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout can stop the whole build (pip, cmake, compilers)
    )
    try:
        stdout, stderr = proc.communicate(timeout=SETUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        _setup_failed(f"did not finish within {SETUP_TIMEOUT} s", _text(stdout), _text(stderr))
    if proc.returncode != 0:
        _setup_failed(f"exited with status {proc.returncode}", stdout, stderr)
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("LLAMA_SERVER", "SMOLLM_GGUF"):
            found[key] = value.strip().strip("'\"")
    missing = [key for key in ("LLAMA_SERVER", "SMOLLM_GGUF") if not found.get(key)]
    if missing:
        _setup_failed(f"printed no {', '.join(missing)}", stdout, stderr)
    install = LlamaInstall(Path(found["LLAMA_SERVER"]), Path(found["SMOLLM_GGUF"]))
    if not os.access(install.server, os.X_OK):
        _setup_failed(f"printed LLAMA_SERVER={install.server}, which is not an executable file", stdout, stderr)
    if not install.gguf.is_file():
        _setup_failed(f"printed SMOLLM_GGUF={install.gguf}, which is not a file", stdout, stderr)
    return install


@pytest.fixture(scope="session")
def llama_install() -> LlamaInstall:
    """llama-server and the SmolLM2 GGUF, installed once per session.

    End-to-end tests mark themselves `timeout(..., func_only=True)`, so this (possibly long)
    setup is bounded by SETUP_TIMEOUT rather than by a test's own time limit.
    """
    return run_setup_llama()
