"""Config reload without downtime (SIGHUP and --watch-config), end to end.

Unlike the Go version, which kills every model on each reload, a reload is applied as
a diff: unchanged models keep their process and keep serving, changed and removed ones
stop only once their in-flight requests are done, added ones are usable at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import signal
import socket
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from tests.fakes import fake_cmd, is_alive
from tests.integration.conftest import HI, RunningService, serving, wait_until

RELOADED = "config reloaded:"
FAILED = "config reload failed"



def answer(response: httpx.Response) -> tuple[str, int]:
    """(content, upstream pid) of a non-streamed chat completion."""
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"], int(response.headers["x-upstream-pid"])



FIXTURE_KEYS = ("startPort", "logToStdout")  # top-level keys `start_service` adds when absent


def write_config(path: Path, config_yaml: str) -> None:
    """Save like an editor does (temporary file, then rename), keeping the keys the fixture added."""
    text = textwrap.dedent(config_yaml)
    kept = [line for line in path.read_text().splitlines()
            if line.startswith(tuple(f"{key}:" for key in FIXTURE_KEYS)) and line.split(":")[0] not in text]
    text = "\n".join([*kept, text])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reload(service: RunningService, config_yaml: str, expect: str = RELOADED) -> str:
    """Rewrite the config, SIGHUP, and wait for the service to log the outcome; returns that line."""
    before = service.log().count(expect)
    write_config(service.config_path, config_yaml)
    service.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: service.log().count(expect) > before, timeout=10), service.log()
    return [line for line in service.log().splitlines() if expect in line][-1]


def test_unchanged_model_keeps_running_while_a_changed_one_restarts(start_service) -> None:
    before = f"""
        groups:
          together: {{swap: false, members: [keep, change]}}
        models:
          keep:
            cmd: {fake_cmd(name="keep")}
          change:
            cmd: {fake_cmd(name="change")}
        """
    service = start_service(before)
    assert service.http.get("/upstream/keep/load").status_code == 200
    assert service.http.get("/upstream/change/load").status_code == 200
    keep_pid, change_pid = service.pid_of("keep"), service.pid_of("change")

    line = reload(service, before.replace(fake_cmd(name="change"), fake_cmd(name="change", respond="bye")))
    assert "changed ['change']" in line and "1 unchanged" in line

    # the idle changed model stops at once; the unchanged one never noticed
    assert wait_until(lambda: not is_alive(change_pid), timeout=10)
    assert is_alive(keep_pid) and service.pid_of("keep") == keep_pid
    assert answer(service.chat("keep")) == ("hello from keep", keep_pid)

    # the next request starts the changed model with its new command
    content, pid = answer(service.chat("change"))
    assert content == "bye from change"
    assert pid != change_pid and service.pid_of("change") == pid
    assert service.pid_of("keep") == keep_pid
    assert service.http.get("/running").json() == {"running": ["change", "keep"]}


def test_changed_model_finishes_its_stream_before_it_restarts(start_service) -> None:
    before = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    service = start_service(before)
    stream = {"model": "m", "messages": HI, "stream": True, "n_chunks": 12, "chunk_delay": 0.25}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with service.http.stream("POST", "/v1/chat/completions", json=stream) as response:
            assert response.status_code == 200
            old_pid = int(response.headers["x-upstream-pid"])
            lines = response.iter_lines()
            received = [next(lines), next(lines)]  # the stream is under way

            reload(service, before.replace(fake_cmd(name="m"), fake_cmd(name="m", respond="new")))
            # a request arriving now waits for the new process instead of using the old one
            waiting = pool.submit(service.chat, "m")
            assert wait_until(lambda: service.metric("llamaswap_queued_requests") == 1, timeout=5)
            assert is_alive(old_pid)  # not cut: the stream still runs on it

            received += list(lines)
        body = "\n".join(received)
        assert all(f'"content":"tok{i} "' in body for i in range(12)), body
        assert body.rstrip().endswith("data: [DONE]")

        # only now does the old process stop; the waiting request gets the new one
        assert wait_until(lambda: not is_alive(old_pid), timeout=10)
        content, pid = answer(waiting.result(timeout=20))
    assert content == "new from m" and pid != old_pid
    assert "[m] now runs with its new config" in service.log()


def test_removed_model_is_gone_and_an_added_one_is_usable_at_once(start_service) -> None:
    service = start_service(
        f"""
        models:
          old:
            cmd: {fake_cmd(name="old")}
        """
    )
    _, old_pid = answer(service.chat("old"))

    line = reload(
        service,
        f"""
        models:
          new:
            cmd: {fake_cmd(name="new")}
        """,
    )
    assert "added ['new']" in line and "removed ['old']" in line
    assert wait_until(lambda: not is_alive(old_pid), timeout=10)
    gone = service.chat("old")
    assert gone.status_code == 404 and "old" in gone.text
    assert answer(service.chat("new"))[0] == "hello from new"
    assert [m["id"] for m in service.http.get("/v1/models").json()["data"]] == ["new"]
    assert service.http.get("/running").json() == {"running": ["new"]}


def test_invalid_config_keeps_the_running_one(start_service) -> None:
    before = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            ttl: 0
        """
    service = start_service(before)
    _, pid = answer(service.chat("m"))

    line = reload(service, before.replace("ttl: 0", "ttl: abc"), expect=FAILED)
    assert "models.m.ttl" in line
    assert RELOADED not in service.log()
    assert service.pid_of("m") == pid
    assert answer(service.chat("m")) == ("hello from m", pid)

    # the file is fixed later: the next reload applies it
    reload(service, textwrap.dedent(before) + "    aliases: [fixed]\n")
    assert answer(service.chat("fixed")) == ("hello from m", pid)


def test_an_unknown_key_is_ignored_on_reload_with_a_warning(start_service) -> None:
    # llama-swap ignores keys it does not know; a reload adding one still applies
    before = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    service = start_service(before)
    _, pid = answer(service.chat("m"))

    reload(service, textwrap.dedent(before) + "    aliases: [renamed]\n    tailcatKey: ephemeral\n")
    assert "models.m.tailcatKey: unknown key, ignored" in service.log()
    assert answer(service.chat("renamed")) == ("hello from m", pid)


def test_invalid_config_mid_traffic_loses_no_request(start_service) -> None:
    config = f"""
        models:
          fast:
            cmd: {fake_cmd(name="fast")}
          slow:
            cmd: {fake_cmd(name="slow", chunks=20, chunk_delay=0.05)}
        groups:
          both: {{swap: false, members: [fast, slow]}}
        """
    service = start_service(config)

    def stream() -> str:
        response = service.http.post("/v1/chat/completions", json={"model": "slow", "messages": HI, "stream": True})
        assert response.status_code == 200
        return response.text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream) for _ in range(2)]
        plain = [pool.submit(lambda: answer(service.chat("fast"))) for _ in range(40)]
        for broken in ("models: [", "models:\n  fast: {cmd: x, ttl: abc}\n"):
            reload(service, broken, expect=FAILED)
        assert all(future.result()[0] == "hello from fast" for future in plain)
        assert all("[DONE]" in future.result() for future in streams)
    assert RELOADED not in service.log()


def test_live_settings_apply_without_a_restart(start_service) -> None:
    before = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            name: Old name
        """
    service = start_service(before)
    _, pid = answer(service.chat("m"))

    after = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            name: New name
            aliases: [fresh]
            filters:
              setParams: {{temperature: 0.25}}
        """
    line = reload(service, after)
    assert "changed none" in line and "1 unchanged" in line
    [record] = service.http.get("/v1/models").json()["data"]
    assert record["name"] == "New name"
    assert record["meta"]["llamaswap"]["aliases"] == ["fresh"]
    assert answer(service.chat("fresh")) == ("hello from m", pid)
    echoed = service.http.post("/echo/x", json={"model": "fresh", "temperature": 1}).json()
    assert echoed["upstream"] == "m"
    assert '"temperature":0.25' in echoed["body_text"]
    assert service.pid_of("m") == pid

    # a ttl is live too: the same process is now unloaded when idle
    reload(service, textwrap.dedent(after) + "    ttl: 1\n")
    assert wait_until(lambda: not is_alive(pid), timeout=10)
    assert "[m] unloading after 1s idle (ttl)" in service.log()


def test_adding_a_model_restarts_no_other(start_service) -> None:
    # "a" sorts before the others: without care it would take their ${PORT}s and shift them
    service = start_service(
        f"""
        groups:
          all: {{swap: false, members: [m, z]}}
        models:
          m:
            cmd: {fake_cmd(name="m")}
          z:
            cmd: {fake_cmd(name="z")}
        """
    )
    pids = {model: answer(service.chat(model))[1] for model in ("m", "z")}

    line = reload(
        service,
        f"""
        groups:
          all: {{swap: false, members: [a, m, z]}}
        models:
          a:
            cmd: {fake_cmd(name="a")}
          m:
            cmd: {fake_cmd(name="m")}
          z:
            cmd: {fake_cmd(name="z")}
        """,
    )
    assert "added ['a']" in line and "changed none" in line and "2 unchanged" in line
    assert answer(service.chat("a"))[0] == "hello from a"
    for model, pid in pids.items():
        assert is_alive(pid) and service.pid_of(model) == pid
        assert answer(service.chat(model)) == (f"hello from {model}", pid)
    assert service.http.get("/running").json() == {"running": ["a", "m", "z"]}


def test_added_model_does_not_take_the_port_of_a_draining_removed_one(start_service) -> None:
    # "c" gets the first free ${PORT}, the one "a" runs on; "a" is removed while it
    # streams and nothing makes "c" wait for it (a non-exclusive group): "c" must not be
    # given the port of a process that is still serving.
    def coexisting(*models: str) -> str:
        return f"groups:\n  g: {{swap: false, exclusive: false, members: [{', '.join(models)}]}}\nmodels:\n" + "".join(
            f"  {model}:\n    cmd: {fake_cmd(name=model)}\n" for model in models
        )

    service = start_service(coexisting("a", "b"))
    stream = {"model": "a", "messages": HI, "stream": True, "n_chunks": 8, "chunk_delay": 0.2}
    with service.http.stream("POST", "/v1/chat/completions", json=stream) as response:
        lines = response.iter_lines()
        next(lines)
        reload(service, coexisting("b", "c"))
        added = service.chat("c")
        list(lines)
    assert answer(added)[0] == "hello from c"  # today: 503 "port ... is already in use"

@pytest.fixture
def start_watching(tmp_path: Path) -> Iterator[Callable[[str], RunningService]]:
    """Like `start_service`, with `--watch-config`."""
    with contextlib.ExitStack() as stack:

        def start(config_yaml: str) -> RunningService:
            config_path = tmp_path / "watched.yaml"
            start_port = random.randrange(20000, 32000, 50)  # below the ephemeral port range
            config_path.write_text(f"startPort: {start_port}\n" + textwrap.dedent(config_yaml))
            return stack.enter_context(serving(config_path, tmp_path / "watched.log", extra_args=["--watch-config"]))

        yield start


def test_watch_config_picks_up_a_saved_change(start_watching) -> None:
    before = f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    service = start_watching(before)
    _, pid = answer(service.chat("m"))
    assert service.chat("later").status_code == 404

    write_config(service.config_path, textwrap.dedent(before) + "    aliases: [later]\n")  # no SIGHUP
    assert wait_until(lambda: RELOADED in service.log(), timeout=10), service.log()
    assert "config change detected" in service.log()
    assert answer(service.chat("later")) == ("hello from m", pid)


def test_a_model_moved_off_a_taken_port_keeps_running_across_a_reload(start_service, squatter: socket.socket) -> None:
    port = squatter.getsockname()[1]
    models = f"""
        startPort: {port}
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    service = start_service(models)
    _, pid = answer(service.chat("m"))
    assert f"port {port} is in use by another program" in service.log()
    line = reload(service, models + f"""
          n:
            cmd: {fake_cmd(name="n")}
        """)
    # m keeps the port it moved to, so its settings are unchanged: same process
    assert "added ['n']" in line and "changed none" in line and "1 unchanged" in line
    assert answer(service.chat("m")) == ("hello from m", pid)
    assert answer(service.chat("n"))[0] == "hello from n"
