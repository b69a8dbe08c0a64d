"""Quick self-test of the fake upstream and the wrapper script (loopback only, bounded)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from . import WRAPPER, fake_argv, fake_cmd, free_port, is_alive, wait_http


class Spawner:
    """Starts processes for a test and kills exactly those (by pid) afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.extra_pids: list[int] = []

    def start(self, argv: list[str], **kw: Any) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp_path / f"proc{len(self.procs)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc, log

    def fake(self, name: str = "fake", **switches: Any) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        proc, _ = self.start(fake_argv(port, name, **switches))
        return proc, port

    def cleanup(self) -> None:
        for pid in self.extra_pids:
            if is_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    s = Spawner(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One healthy fake named 'alpha' with 3 chunks, shared by the module."""
    s = Spawner(tmp_path_factory.mktemp("alpha"))
    try:
        proc, port = s.fake("alpha", chunks=3)
        assert wait_http(f"http://127.0.0.1:{port}/health", 10, proc=proc)
        yield port
    finally:
        s.cleanup()


def client(port: int) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


# ----------------------------------------------------------------------------- basics


def test_fake_cmd_builds_command_line() -> None:
    cmd = fake_cmd(name="a b", chunk_delay=0.1, ignore_sigterm=True, never_healthy=False)
    assert "--port ${PORT}" in cmd
    assert "--name 'a b'" in cmd
    assert cmd.endswith("--chunk-delay 0.1 --ignore-sigterm")


def test_chat_non_stream(alpha: int) -> None:
    raw = client(alpha).chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-upstream-name"] == "alpha"
    assert raw.headers["x-upstream-pid"].isdigit()
    resp = raw.parse()
    assert resp.model == "m1"
    assert resp.choices[0].message.content == "hello from alpha"
    assert resp.usage is not None and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    timings = (resp.model_extra or {})["timings"]
    assert timings["predicted_n"] == 3 and "prompt_per_second" in timings


def test_chat_stream(alpha: int) -> None:
    stream = client(alpha).chat.completions.create(
        model="m2", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["tok0 ", "tok1 ", "tok2 "]
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.model == "m2" for c in chunks)
    # n_chunks in the request overrides --chunks
    stream = client(alpha).chat.completions.create(
        model="m2", messages=[], stream=True, extra_body={"n_chunks": 7})
    assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 7


def test_other_endpoints(alpha: int) -> None:
    emb = client(alpha).embeddings.create(model="e", input=["a", "b"])  # base64 by default in the SDK
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 8
    req = urllib.request.Request(
        f"http://127.0.0.1:{alpha}/echo/a%2Fb?x=1&y=%20", data=b"payload", method="PATCH",
        headers={"X-Test": "yes"})
    with urllib.request.urlopen(req, timeout=5) as r:
        echo = json.loads(r.read())
    assert echo["method"] == "PATCH" and echo["path"] == "/echo/a%2Fb" and echo["query_string"] == "x=1&y=%20"
    assert echo["headers_lower"]["x-test"] == "yes" and echo["body_text"] == "payload" and echo["body_len"] == 7
    native = urllib.request.Request(f"http://127.0.0.1:{alpha}/completion", data=b'{"prompt":"x"}', method="POST")
    with urllib.request.urlopen(native, timeout=5) as r:
        body = json.loads(r.read())
    assert body["content"] == "hello from alpha" and body["tokens_predicted"] == 3 and body["upstream"] == "alpha"
    assert get_json(f"http://127.0.0.1:{alpha}/pid")["pid"] > 0


def test_slow_client_disconnect_is_counted(alpha: int) -> None:
    before = get_json(f"http://127.0.0.1:{alpha}/cancelled-count")["count"]
    with pytest.raises(OSError):  # TimeoutError / URLError
        urllib.request.urlopen(f"http://127.0.0.1:{alpha}/slow?seconds=5", timeout=0.3)
    assert wait_until(lambda: get_json(f"http://127.0.0.1:{alpha}/cancelled-count")["count"] == before + 1)


# ----------------------------------------------------------------------------- switches


def test_error_status_and_healthy_after(spawn: Spawner) -> None:
    proc, port = spawn.fake("err", error_status=503, healthy_after=0.5)
    assert wait_http(f"http://127.0.0.1:{port}/health", 10, status=503, proc=proc)  # listening, loading
    assert wait_http(f"http://127.0.0.1:{port}/health", 10, status=200, proc=proc)
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=b"{}", method="POST"), timeout=5)
    assert ei.value.code == 503
    err = json.loads(ei.value.read())
    assert err["error"] == {"message": "fake upstream error", "type": "server_error", "code": 503}


def test_crash_at_start() -> None:
    proc = subprocess.run(fake_argv(free_port(), "boom", crash_at_start=True, exit_code=7),
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 7
    lines = proc.stderr.strip().splitlines()
    assert len(lines) >= 3 and lines[-1] == "fatal: simulated crash at start"


def test_sigterm_exits_zero(spawn: Spawner) -> None:
    proc, port = spawn.fake("term")
    assert wait_http(f"http://127.0.0.1:{port}/health", 10, proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_ignore_sigterm(spawn: Spawner) -> None:
    proc, port = spawn.fake("stubborn", ignore_sigterm=True)
    assert wait_http(f"http://127.0.0.1:{port}/health", 10, proc=proc)
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    assert get_json(f"http://127.0.0.1:{port}/health")["status"] == "ok"
    proc.kill()
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_die_mid_stream(spawn: Spawner) -> None:
    proc, port = spawn.fake("dying", chunks=5, die_mid_stream=2)
    assert wait_http(f"http://127.0.0.1:{port}/health", 10, proc=proc)
    got: list[str] = []
    with pytest.raises(Exception):
        for c in client(port).chat.completions.create(model="m", messages=[], stream=True):
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert got == ["tok0 ", "tok1 "]
    assert proc.wait(timeout=5) == 3


# ----------------------------------------------------------------------------- wrapper.sh


@pytest.mark.parametrize("child_ignores_term", [False, True])
def test_wrapper_leaves_orphan(spawn: Spawner, child_ignores_term: bool) -> None:
    port = free_port()
    opt = ["--child-ignores-term"] if child_ignores_term else []
    proc, log = spawn.start(["/bin/sh", str(WRAPPER), *opt, "--", *fake_argv(port, "wrapped")],
                            start_new_session=True)
    found: list[re.Match[str]] = []

    def pids() -> bool:
        m = re.search(r"wrapper pid=(\d+) child=(\d+)", log.read_text())
        if m:
            found.append(m)
        return m is not None

    assert wait_until(pids)
    wrapper_pid, child_pid = int(found[0][1]), int(found[0][2])
    spawn.extra_pids.append(child_pid)
    assert wrapper_pid == proc.pid and child_pid != proc.pid
    assert wait_http(f"http://127.0.0.1:{port}/health", 10)
    assert get_json(f"http://127.0.0.1:{port}/pid")["ppid"] == wrapper_pid

    proc.send_signal(signal.SIGTERM)  # wrapper dies, does not forward
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert is_alive(child_pid)
    assert get_json(f"http://127.0.0.1:{port}/health")["status"] == "ok"

    os.killpg(wrapper_pid, signal.SIGTERM)  # our own session/group: reaches the orphan
    if child_ignores_term:
        assert not wait_until(lambda: not is_alive(child_pid), timeout=0.3)
        os.killpg(wrapper_pid, signal.SIGKILL)
    assert wait_until(lambda: not is_alive(child_pid), timeout=5)
