"""GET /logs and /logs/stream*: histories per logToStdout, per-model streams, live lines,
shutdown with open streams, and readers that stall without slowing requests."""

from __future__ import annotations

import random
import textwrap
import time
from pathlib import Path

from tests.fakes import fake_cmd, is_alive
from tests.integration.conftest import launch, wait_until
from tests.integration.streams import StreamReader, stalled_reader


def config(to_stdout: str = "proxy") -> str:
    return f"""
        logToStdout: {to_stdout}
        models:
          m1:
            cmd: {fake_cmd(name="alpha")}
          org/m2:
            cmd: {fake_cmd(name="beta")}
        """


def test_logs_history_follows_log_to_stdout(start_service) -> None:
    service = start_service(config("proxy"))
    assert service.chat("m1").status_code == 200
    logs = service.http.get("/logs")
    assert logs.status_code == 200
    assert logs.headers["content-type"].startswith("text/plain")
    assert "[INFO]" in logs.text and "listening" in logs.text
    assert "fake upstream alpha" not in logs.text  # default wiring: no upstream output


def test_logs_with_both_include_upstream_output(start_service) -> None:
    service = start_service(config("both"))
    assert service.chat("m1").status_code == 200
    assert wait_until(lambda: "alpha POST /v1/chat/completions" in service.http.get("/logs").text)
    assert "[INFO]" in service.http.get("/logs").text


def test_browser_is_redirected_to_the_ui(start_service) -> None:
    service = start_service(config())
    response = service.http.get("/logs", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 302
    assert response.headers["location"] == "/ui/"


def test_source_streams_keep_their_history_whatever_log_to_stdout(start_service) -> None:
    service = start_service(config("none"))
    assert service.chat("m1").status_code == 200
    assert service.chat("org/m2").status_code == 200
    assert service.http.get("/logs").text == ""

    upstream = StreamReader(service, "/logs/stream/upstream")
    m1 = StreamReader(service, "/logs/stream/m1")
    m2 = StreamReader(service, "/logs/stream/org/m2")
    proxy = StreamReader(service, "/logs/stream/proxy")
    try:
        assert wait_until(lambda: "alpha POST /v1/chat/completions" in upstream.text)
        assert wait_until(lambda: "beta POST /v1/chat/completions" in upstream.text)
        assert wait_until(lambda: "fake upstream alpha listening" in m1.text)
        assert wait_until(lambda: "fake upstream beta listening" in m2.text)
        assert wait_until(lambda: "[INFO]" in proxy.text and "starting" in proxy.text)
        assert "beta" not in m1.text and "alpha" not in m2.text
        assert "fake upstream" not in proxy.text
    finally:
        for reader in (upstream, m1, m2, proxy):
            reader.close()


def test_unknown_model_stream_is_400(start_service) -> None:
    service = start_service(config())
    response = service.http.get("/logs/stream/nope")
    assert response.status_code == 400
    assert "nope" in response.json()["error"]


def test_live_lines_arrive_and_no_history_skips_history(start_service) -> None:
    service = start_service(config("both"))
    assert service.chat("m1").status_code == 200  # history: one request
    full = StreamReader(service, "/logs/stream/m1")
    live = StreamReader(service, "/logs/stream/m1?no-history")
    combined = StreamReader(service, "/logs/stream")
    try:
        assert wait_until(lambda: "fake upstream alpha listening" in full.text)
        assert full.text.count("POST /v1/chat/completions") == 1
        time.sleep(0.2)
        assert live.text == ""  # nothing new yet, and no history
        assert service.chat("m1").status_code == 200
        assert wait_until(lambda: live.text.count("POST /v1/chat/completions") == 1)
        assert "listening" not in live.text
        assert wait_until(lambda: full.text.count("POST /v1/chat/completions") == 2)
        assert wait_until(lambda: combined.text.count("alpha POST /v1/chat/completions") == 2)
    finally:
        for reader in (full, live, combined):
            reader.close()


def test_shutdown_with_open_streams_is_prompt(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"startPort: {random.randrange(10000, 32000, 50)}\n" + textwrap.dedent(config("both")))
    service = launch(config_path, tmp_path / "service.log")
    service.wait_ready()
    assert service.chat("m1").status_code == 200
    pid = service.pid_of("m1")
    readers = [StreamReader(service, p) for p in ("/logs/stream", "/logs/stream/upstream", "/logs/stream/m1")]
    began = time.monotonic()
    assert service.stop(timeout=15) == 0
    assert time.monotonic() - began < 5, "an open log stream held up shutdown"
    for reader in readers:
        assert reader.ended.wait(5), "the stream did not end at shutdown"
        reader.close()
    assert wait_until(lambda: not is_alive(pid), timeout=5)


def test_stalled_reader_does_not_slow_requests(start_service) -> None:
    service = start_service(config("both"))
    assert service.chat("m1").status_code == 200

    def timed_requests(n: int) -> float:
        began = time.monotonic()
        for _ in range(n):
            assert service.chat("m1").status_code == 200
        return time.monotonic() - began

    baseline = timed_requests(50)
    stalled = [stalled_reader(service, p) for p in ("/logs/stream", "/logs/stream/upstream", "/logs/stream/m1")]
    try:
        with_stalled = timed_requests(300) / 6
        assert with_stalled < baseline * 3 + 1.0, (baseline, with_stalled)
        # the service is still responsive for everything else
        assert service.http.get("/health", timeout=5).status_code == 200
        assert service.http.get("/logs", timeout=5).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
