"""Upstream process lifecycle through the real service: failed starts, stops, no orphans."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.fakes import fake_cmd, free_port, is_alive, wrapper_cmd
from tests.integration.conftest import RunningService, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(service: RunningService, model: str) -> httpx.Response:
    return service.http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})


def upstream_pids(service: RunningService, model: str) -> dict[str, int]:
    """The fake's own pid, parent and group, asked through the passthrough."""
    return service.http.get(f"/upstream/{model}/pid").json()


def load(service: RunningService, model: str) -> int:
    """Start ``model`` and return the pid of the process the service spawned."""
    assert service.http.get(f"/upstream/{model}/load").json() == {"status": "ok", "message": f"{model} is ready"}
    return service.pid_of(model)


# ------------------------------------------------------------------ failed starts


def test_crash_at_start_fails_at_once_quoting_its_output(start_service) -> None:
    service = start_service(
        f"""
        healthCheckTimeout: 60
        models:
          broken:
            cmd: {fake_cmd(name="broken", crash_at_start=True, exit_code=3)}
        """
    )
    began = time.monotonic()
    response = chat(service, "broken")
    elapsed = time.monotonic() - began
    assert response.status_code == 503
    error = response.json()["error"]
    assert "exited with code 3" in error
    assert "fatal: simulated crash at start" in error
    assert elapsed < 10, f"a crash must fail the start at once, not after the health timeout ({elapsed:.1f}s)"

    entry = service.health()["models"]["broken"]
    assert entry["status"] == "failed"
    assert "exited with code 3" in entry["error"]
    assert entry["pid"] is None
    assert "[broken] fatal: simulated crash at start" in service.log()  # output echoed to the log

    # a failed model is not stuck: the next request starts it again
    again = chat(service, "broken")
    assert again.status_code == 503 and "exited with code 3" in again.json()["error"]
    assert service.log().count("[broken] starting:") == 2


def test_a_crash_looping_model_is_not_restarted_by_every_request(start_service) -> None:
    service = start_service(f"models:\n  broken:\n    cmd: {fake_cmd(name='broken', crash_at_start=True)}\n")
    for _ in range(2):  # failing twice in a row starts the back-off
        assert chat(service, "broken").status_code == 503
    refused = chat(service, "broken")
    assert refused.status_code == 503
    assert "failed 2 times in a row and is not restarted for another" in refused.json()["error"]
    assert "exited with code 1" in refused.json()["error"]  # the reason is still given
    assert refused.headers["Retry-After"] == "1"
    assert service.log().count("[broken] starting:") == 2  # no start for the refused request
    # once the back-off is over, a request tries again; an explicit load always may
    assert wait_until(lambda: service.log().count("[broken] starting:") == 3 or chat(service, "broken") is None)
    assert "restarted for another" in chat(service, "broken").json()["error"]  # 3 failures: 2 s now
    load = service.http.get("/upstream/broken/load")
    assert load.status_code == 503 and "exited with code 1" in load.json()["error"]
    assert service.log().count("[broken] starting:") == 4


def test_health_check_timeouts_are_15s_for_unhealthy_and_hanging_upstreams(start_service) -> None:
    # healthCheckTimeout below the minimum is raised to 15 s
    unhealthy = start_service(
        f"""
        healthCheckTimeout: 5
        models:
          sick:
            cmd: {fake_cmd(name="sick", never_healthy=True)}
        """
    )
    hanging = start_service(
        f"""
        healthCheckTimeout: 15
        models:
          mute:
            cmd: {fake_cmd(name="mute", hang_health=True)}
        """
    )

    def timed(service: RunningService, model: str) -> tuple[httpx.Response, float]:
        began = time.monotonic()
        response = chat(service, model)
        return response, time.monotonic() - began

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [pool.submit(timed, unhealthy, "sick"), pool.submit(timed, hanging, "mute")]
        pids: dict[str, int] = {}
        for service, model in ((unhealthy, "sick"), (hanging, "mute")):
            assert wait_until(lambda: service.health()["models"].get(model, {}).get("pid") is not None, timeout=10)
            pids[model] = service.pid_of(model)
            assert service.health()["models"][model]["status"] == "starting"
            assert is_alive(pids[model])
        for future, model in zip(results, ("sick", "mute")):
            response, elapsed = future.result(timeout=40)
            assert response.status_code == 503
            assert response.json() == {"error": "upstream health check timed out after 15s"}
            assert 14.5 <= elapsed < 30, (model, elapsed)
            assert not is_alive(pids[model]), f"{model} survived its failed start"
    for service, model in ((unhealthy, "sick"), (hanging, "mute")):
        entry = service.health()["models"][model]
        assert entry["status"] == "failed"
        assert entry["error"] == "upstream health check timed out after 15s"


# ------------------------------------------------------------------- start options


def test_check_endpoint_none_serves_a_fixed_port_model_without_health_checks(start_service) -> None:
    port = free_port()
    service = start_service(
        f"""
        healthCheckTimeout: 60
        models:
          fixed:
            cmd: {fake_cmd(port, name="fixed", never_healthy=True)}
            proxy: http://127.0.0.1:{port}
            checkEndpoint: none
        """
    )
    began = time.monotonic()
    pid = load(service, "fixed")  # its /health answers 503 forever: checking it would never end
    assert time.monotonic() - began < 10
    assert service.health()["models"]["fixed"] == {"status": "running", "pid": pid}
    # ready means "spawned": it may take a moment to listen, then it is served
    assert wait_until(lambda: chat(service, "fixed").status_code == 200, timeout=10)
    reply = chat(service, "fixed")
    assert reply.json()["choices"][0]["message"]["content"] == "hello from fixed"
    assert reply.headers["x-upstream-pid"] == str(pid)


def test_env_is_added_to_the_inherited_environment(start_service) -> None:
    service = start_service(
        f"""
        models:
          envy:
            cmd: {fake_cmd(name="envy")}
            env:
              - "LLAMA_SWAP_TEST_VALUE=from config"
              - "PYTHONUNBUFFERED=overridden"
        """
    )

    def env(name: str) -> str | None:
        return service.http.get("/upstream/envy/env", params={"name": name}).json()["value"]

    assert env("LLAMA_SWAP_TEST_VALUE") == "from config"
    assert env("PYTHONUNBUFFERED") == "overridden"  # `env` wins over the service's own
    assert env("PATH") == os.environ["PATH"]  # inherited
    assert "[envy] fake upstream envy listening on" in service.log()


# ------------------------------------------------------------------------- stops


@pytest.mark.parametrize("child_ignores_term", [False, True], ids=["child-obeys-term", "child-ignores-term"])
def test_unload_kills_a_wrapper_scripts_children(start_service, child_ignores_term: bool) -> None:
    service = start_service(
        f"""
        models:
          wrapped:
            cmd: {wrapper_cmd(fake_cmd(name="wrapped"), child_ignores_term=child_ignores_term)}
            unloadTimeout: 1
        """
    )
    wrapper = load(service, "wrapped")
    inner = upstream_pids(service, "wrapped")
    assert inner["pid"] != wrapper and inner["ppid"] == wrapper and inner["pgid"] == wrapper

    cpu_before = sum(psutil.Process(service.proc.pid).cpu_times()[:2])
    began = time.monotonic()
    assert service.http.delete("/upstream/wrapped").json() == {"status": "ok", "message": "wrapped stopped"}
    elapsed = time.monotonic() - began
    cpu = sum(psutil.Process(service.proc.pid).cpu_times()[:2]) - cpu_before
    assert not is_alive(wrapper)
    assert not is_alive(inner["pid"])
    if child_ignores_term:
        assert 0.8 <= elapsed < 5, f"SIGTERM, then SIGKILL after unloadTimeout 1s; took {elapsed:.2f}s"
        # waiting for the orphaned child must not busy-loop (it once burnt a core until the SIGKILL)
        assert cpu < 0.5 * elapsed, f"the service used {cpu:.2f}s of CPU in {elapsed:.2f}s while stopping"
    else:
        assert elapsed < 5
    assert service.health()["models"] == {}


def test_sigterm_ignored_until_unload_timeout_then_sigkill(start_service) -> None:
    service = start_service(
        f"""
        models:
          stubborn:
            cmd: {fake_cmd(name="stubborn", ignore_sigterm=True)}
            unloadTimeout: 2
        """
    )
    pid = load(service, "stubborn")
    began = time.monotonic()
    assert service.http.delete("/upstream/stubborn").status_code == 200
    elapsed = time.monotonic() - began
    assert 1.5 <= elapsed < 6, f"expected SIGTERM, ~2s of grace, then SIGKILL; took {elapsed:.2f}s"
    assert not is_alive(pid)


def test_cmd_stop_replaces_sigterm(start_service, tmp_path: Path) -> None:
    marker = tmp_path / "stopped-pid"
    # The upstream ignores SIGTERM and cmdStop sends SIGINT: a quick stop proves cmdStop ran.
    service = start_service(
        f"""
        models:
          custom:
            cmd: {fake_cmd(name="custom", ignore_sigterm=True)}
            cmdStop: /bin/sh -c 'echo ${{PID}} > {marker}; kill -INT ${{PID}}'
            unloadTimeout: 30
        """
    )
    pid = load(service, "custom")
    began = time.monotonic()
    assert service.http.delete("/upstream/custom").status_code == 200
    elapsed = time.monotonic() - began
    assert marker.read_text().strip() == str(pid)
    assert elapsed < 10, f"cmdStop should have stopped it well before unloadTimeout ({elapsed:.1f}s)"
    assert not is_alive(pid)
    assert "fake upstream custom got signal 2" in service.log()


# ----------------------------------------------------------------- service death


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_service_signal_stops_every_upstream_and_exits_0(start_service, sig: signal.Signals) -> None:
    service = start_service(
        f"""
        models:
          wrapped:
            cmd: {wrapper_cmd(fake_cmd(name="wrapped"))}
        """
    )
    wrapper = load(service, "wrapped")
    inner = upstream_pids(service, "wrapped")["pid"]
    service.proc.send_signal(sig)
    assert service.proc.wait(timeout=20) == 0
    assert not is_alive(wrapper)
    assert not is_alive(inner)
    assert "shutting down" in service.log()


def test_service_sigterm_during_a_start_answers_the_waiting_client_and_exits(start_service) -> None:
    service = start_service(
        f"""
        healthCheckTimeout: 60
        models:
          loading:
            cmd: {fake_cmd(name="loading", never_healthy=True)}
        """
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(chat, service, "loading")
        assert wait_until(lambda: service.health()["models"].get("loading", {}).get("pid") is not None)
        pid = service.pid_of("loading")
        began = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=20) == 0
        elapsed = time.monotonic() - began
        response = waiting.result(timeout=10)
    assert response.status_code == 503
    assert response.json() == {"error": "llama-swap is shutting down"}
    assert elapsed < 4, f"a start in progress must not hold the shutdown open ({elapsed:.1f}s)"
    assert not is_alive(pid)


def test_service_sigterm_lets_an_in_flight_stream_finish(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m", chunks=6, chunk_delay=0.25)}
        """
    )
    pid = load(service, "m")
    client = service.openai()
    first_chunk = threading.Event()

    def stream() -> str:
        text = ""
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                first_chunk.set()
        return text

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream)
        assert first_chunk.wait(timeout=20)
        service.proc.send_signal(signal.SIGTERM)
        assert streaming.result(timeout=20) == "".join(f"tok{i} " for i in range(6))
    assert service.proc.wait(timeout=20) == 0
    assert not is_alive(pid)


def test_parent_death_signal_alone_kills_a_direct_upstream(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    )
    pid = load(service, "m")
    [reaper] = [c.pid for c in psutil.Process(service.proc.pid).children() if c.pid != pid]
    os.kill(reaper, signal.SIGSTOP)  # take the reaper out of the picture
    try:
        service.proc.kill()
        service.proc.wait(timeout=10)
        assert wait_until(lambda: not is_alive(pid), timeout=5), "the upstream outlived its SIGKILLed parent"
    finally:
        os.kill(reaper, signal.SIGCONT)
    assert wait_until(lambda: not is_alive(reaper), timeout=10), "the reaper did not exit after the service died"


def test_service_sigkill_leaves_no_upstream_behind(start_service) -> None:
    service = start_service(
        f"""
        models:
          wrapped:
            cmd: {wrapper_cmd(fake_cmd(name="wrapped"), child_ignores_term=True)}
        """
    )
    wrapper = load(service, "wrapped")
    inner = upstream_pids(service, "wrapped")["pid"]
    helpers = [c.pid for c in psutil.Process(service.proc.pid).children() if c.pid != wrapper]
    assert helpers, "expected the reaper process next to the upstream"

    service.proc.kill()
    service.proc.wait(timeout=10)
    for pid in [wrapper, inner, *helpers]:
        assert wait_until(lambda: not is_alive(pid), timeout=10), f"pid {pid} survived the service's SIGKILL"


# --------------------------------------------------------------- requests vs. stops


def test_swap_waits_for_the_in_flight_stream(start_service) -> None:
    service = start_service(
        f"""
        models:
          a:
            cmd: {fake_cmd(name="a", chunks=8, chunk_delay=0.25)}
          b:
            cmd: {fake_cmd(name="b")}
        """
    )
    a_pid = load(service, "a")
    client = service.openai()
    first_chunk = threading.Event()

    def stream_a() -> tuple[str, float]:
        text = ""
        for chunk in client.chat.completions.create(model="a", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                first_chunk.set()
        return text, time.monotonic()

    def ask_b() -> tuple[str, float]:
        reply = client.chat.completions.create(model="b", messages=MESSAGES)
        return reply.choices[0].message.content or "", time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a_future = pool.submit(stream_a)
        assert first_chunk.wait(timeout=20)
        b_future = pool.submit(ask_b)
        a_text, a_done = a_future.result(timeout=30)
        b_text, b_done = b_future.result(timeout=30)
    assert a_text == "".join(f"tok{i} " for i in range(8)), "the in-flight stream was cut"
    assert b_text == "hello from b"
    assert b_done > a_done, "b was answered before a's stream had finished"
    assert not is_alive(a_pid)
    assert service.http.get("/running").json() == {"running": ["b"]}


def test_client_disconnect_cancels_the_upstream_request(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m", chunks=50, chunk_delay=0.2)}
        """
    )
    load(service, "m")

    def cancelled() -> list[dict]:
        return service.http.get("/upstream/m/cancelled-count").json()["cancelled"]

    assert cancelled() == []
    events = 0
    with httpx.Client(base_url=service.url, timeout=30) as client:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                events += line.startswith("data:")
                if events == 2:
                    break
    assert events == 2
    assert wait_until(lambda: len(cancelled()) >= 1, timeout=5), "the upstream stream was not cancelled"
    assert cancelled()[0]["path"] == "/v1/chat/completions"

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{service.url}/slow", params={"seconds": 30, "model": "m"}, timeout=1.0)
    assert wait_until(lambda: len(cancelled()) >= 2, timeout=5), "the abandoned /slow was not cancelled"
    assert cancelled()[1]["path"] == "/slow"
    # the abandoned requests were released: the model still serves
    assert chat(service, "m").status_code == 200


def inflight(service: RunningService) -> list[dict]:
    return service.http.get("/api/inflight").json()["requests"]


def test_client_leaving_while_its_model_loads_leaves_nothing_behind(start_service) -> None:
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', healthy_after=2)}\n")
    with pytest.raises(httpx.ReadTimeout):
        service.http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=0.5)
    assert wait_until(lambda: inflight(service) == [], timeout=5)  # the abandoned request is gone
    assert chat(service, "m").status_code == 200  # and the model is not wedged
    assert service.http.get("/api/metrics/activity").json()["data"][-1]["resp_status_code"] == 499


def test_client_leaving_the_queue_cancels_its_swap(start_service) -> None:
    service = start_service(
        f"""
        models:
          busy:
            cmd: {fake_cmd(name="busy", chunks=15, chunk_delay=0.1)}
          other:
            cmd: {fake_cmd(name="other")}
        """
    )
    busy_pid = load(service, "busy")
    with httpx.Client(base_url=service.url, timeout=30) as client:
        body = {"model": "busy", "messages": MESSAGES, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            # a request for `other` must wait for the stream (a swap never cuts one off)...
            with pytest.raises(httpx.ReadTimeout):
                service.http.post("/v1/chat/completions", json={"model": "other", "messages": MESSAGES}, timeout=0.3)
            assert wait_until(lambda: len(inflight(service)) == 1, timeout=5)  # ...and left the queue
            assert "[DONE]" in "".join(stream.iter_text())
    # nobody wants `other` any more: the stream's end swaps nothing
    assert service.http.get("/running").json() == {"running": ["busy"]}
    assert service.pid_of("busy") == busy_pid and "[other] starting" not in service.log()


def test_crash_while_ready_is_noticed_and_the_next_request_restarts(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
        """
    )
    old = load(service, "m")
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: "m" not in service.health()["models"], timeout=5)
    assert service.http.get("/running").json() == {"running": []}
    reply = chat(service, "m")
    assert reply.status_code == 200
    new = service.pid_of("m")
    assert new != old and reply.headers["x-upstream-pid"] == str(new)
    assert "[m] upstream exited unexpectedly" in service.log()


def test_upstream_dying_with_the_request_is_not_sent_it_twice(start_service, tmp_path) -> None:
    """An upstream that got the request and died before answering may have done the work
    (or died of it): the client gets a 502 saying so, the request is not sent again, and
    the next request starts the model afresh."""
    marker = tmp_path / "died-once"
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', die_before_answer_once=marker)}\n")
    old = load(service, "m")
    reply = chat(service, "m")
    assert reply.status_code == 502
    assert "upstream 'm' closed the connection without answering" in reply.json()["error"]
    assert "not sent again" in reply.json()["error"]
    assert marker.exists()  # the first upstream did die on this request
    assert "replay" not in service.log()
    again = chat(service, "m")
    assert again.status_code == 200
    new = service.pid_of("m")
    assert new != old and not is_alive(old)


def test_hung_upstream_is_noticed_by_health_checks_and_restarted(start_service) -> None:
    service = start_service(f"healthCheckInterval: 0.2\nmodels:\n  m:\n    cmd: {fake_cmd(name='m')}\n")
    old = load(service, "m")
    assert service.http.post("/upstream/m/control/hang-health").status_code == 200
    assert wait_until(lambda: "m" not in service.health()["models"], timeout=15)
    assert not is_alive(old)
    assert "[m] upstream stopped answering its health check (3 checks in a row failed)" in service.log()
    reply = chat(service, "m")
    assert reply.status_code == 200 and reply.headers["x-upstream-pid"] != str(old)


def test_ready_models_are_not_restarted_while_their_health_checks_pass(start_service) -> None:
    service = start_service(f"healthCheckInterval: 0.1\nmodels:\n  m:\n    cmd: {fake_cmd(name='m')}\n")
    pid = load(service, "m")
    checks = lambda: service.log().count("m GET /health")  # noqa: E731 - the fake logs each check
    started = checks()
    assert wait_until(lambda: checks() >= started + 5, timeout=10)  # checked repeatedly while ready
    assert service.pid_of("m") == pid and "health check failed" not in service.log()


def test_isolated_crashes_between_healthy_swaps_never_trigger_the_back_off(start_service) -> None:
    """A model that crashes now and then but serves fine in between (and is swapped out
    cleanly) is always restarted at once; only failures in a row are held back."""
    service = start_service(f"models:\n  a:\n    cmd: {fake_cmd(name='a')}\n  b:\n    cmd: {fake_cmd(name='b')}\n")
    for _ in range(3):
        os.kill(load(service, "a"), signal.SIGKILL)
        assert wait_until(lambda: "a" not in service.health()["models"], timeout=5)
        assert chat(service, "a").status_code == 200  # restarted at once
        assert chat(service, "b").status_code == 200  # swaps `a` out cleanly
    assert "not restarted for another" not in service.log()


def test_a_model_started_during_its_back_off_serves_new_requests(start_service) -> None:
    service = start_service(f"models:\n  a:\n    cmd: {fake_cmd(name='a')}\n  b:\n    cmd: {fake_cmd(name='b')}\n")
    for _ in range(3):  # crashes in a row, never having served: a crash loop
        os.kill(load(service, "a"), signal.SIGKILL)
        assert wait_until(lambda: "a" not in service.health()["models"], timeout=5)
    assert "not restarted for another" in chat(service, "a").json()["error"]
    load(service, "a")  # an explicit load is not held back...
    assert chat(service, "a").status_code == 200  # ...and once it runs, requests are served
    assert chat(service, "b").status_code == 200
    assert chat(service, "a").status_code == 200  # swapped out cleanly: its failures are forgotten
