"""Scheduling features end to end: limits, TTL, preload, loading state, groups, reload."""

from __future__ import annotations

import concurrent.futures
import time

import openai

from tests.fakes import fake_cmd, is_alive
from tests.integration.conftest import HI, wait_until


def test_concurrency_limit_answers_429_with_retry_after(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            concurrencyLimit: 2
        """
    )
    service.http.get("/upstream/m/load")
    slow = {"model": "m", "messages": HI, "stream": True, "n_chunks": 20, "chunk_delay": 0.1}
    with service.http.stream("POST", "/v1/chat/completions", json=slow) as first, \
            service.http.stream("POST", "/v1/chat/completions", json=slow) as second:
        assert first.status_code == second.status_code == 200
        rejected = service.chat("m")
        assert rejected.status_code == 429
        assert rejected.headers["retry-after"] == "1"
        assert rejected.json() == {"error": "too many requests for model 'm' (concurrency limit 2)"}
    # the two streams were abandoned: their slots come back once the service notices
    assert wait_until(lambda: service.chat("m").status_code == 200, timeout=10)


def test_ttl_unloads_an_idle_model_and_never_during_a_request(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m")}
            ttl: 1
        """
    )
    # a 2.5 s stream outlives the 1 s ttl: the model must stay up until it ends
    stream = {"model": "m", "messages": HI, "stream": True, "n_chunks": 5, "chunk_delay": 0.5}
    with service.http.stream("POST", "/v1/chat/completions", json=stream) as response:
        body = "".join(response.iter_text())
    assert all(f'"content":"tok{i} "' in body for i in range(5)) and "[DONE]" in body
    pid = service.pid_of("m")
    ended = time.monotonic()
    assert wait_until(lambda: not is_alive(pid), timeout=10)
    assert time.monotonic() - ended >= 0.8  # idle time counted from the end of the request
    assert service.http.get("/running").json() == {"running": []}
    assert "unloading after 1s idle (ttl)" in service.log()


def test_global_ttl_applies_to_models_without_their_own(start_service) -> None:
    service = start_service(
        f"""
        globalTTL: 1
        models:
          inherits:
            cmd: {fake_cmd(name="inherits")}
          never:
            cmd: {fake_cmd(name="never")}
            ttl: 0
        """
    )
    service.http.get("/upstream/inherits/load")
    pid = service.pid_of("inherits")
    assert wait_until(lambda: not is_alive(pid), timeout=10)
    assert "[inherits] unloading after 1s idle (ttl)" in service.log()


def test_preload_starts_models_in_order_obeying_the_swap(start_service) -> None:
    service = start_service(
        f"""
        hooks:
          on_startup:
            preload: [first, second-alias]
        models:
          first:
            cmd: {fake_cmd(name="first")}
          second:
            cmd: {fake_cmd(name="second")}
            aliases: [second-alias]
        """
    )
    assert wait_until(lambda: "[second] preloaded" in service.log(), timeout=20)
    assert service.http.get("/running").json() == {"running": ["second"]}
    log = service.log()
    assert log.index("[first] preloaded") < log.index("[second] preloaded")


def test_loading_state_streams_progress_then_the_answer(start_service) -> None:
    service = start_service(
        f"""
        sendLoadingState: true
        models:
          m:
            cmd: {fake_cmd(name="m", healthy_after=1.5, chunks=3)}
        """
    )
    client = service.openai()
    reasoning, content, first_at = "", "", None
    started = time.monotonic()
    for chunk in client.chat.completions.create(model="m", messages=HI, stream=True):
        first_at = first_at or time.monotonic()
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert first_at is not None and first_at - started < 1.0  # progress before the model is ready
    assert "loading model m" in reasoning and "ready after" in reasoning
    assert content == "tok0 tok1 tok2 "


def test_loading_state_failure_is_an_error_the_client_raises(start_service) -> None:
    service = start_service(
        f"""
        sendLoadingState: true
        models:
          broken:
            cmd: {fake_cmd(name="broken", crash_at_start=True)}
        """
    )
    client = service.openai()
    try:
        for _ in client.chat.completions.create(model="broken", messages=HI, stream=True):
            pass
    except openai.APIError as exc:
        assert "simulated crash at start" in str(exc.message)
    else:
        raise AssertionError("the failed load did not surface as an error")


def test_queue_serves_higher_priority_first(start_service) -> None:
    service = start_service(
        f"""
        routing:
          scheduler:
            settings:
              fifo:
                priority: {{urgent: 10}}
        models:
          busy:
            cmd: {fake_cmd(name="busy")}
          normal:
            cmd: {fake_cmd(name="normal")}
          urgent:
            cmd: {fake_cmd(name="urgent")}
        """
    )
    service.http.get("/upstream/busy/load")
    order: list[str] = []
    stream = {"model": "busy", "messages": HI, "stream": True, "n_chunks": 6, "chunk_delay": 0.25}
    with service.http.stream("POST", "/v1/chat/completions", json=stream) as busy:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            normal = pool.submit(lambda: (service.chat("normal"), order.append("normal")))
            assert wait_until(lambda: service.metric("llamaswap_queued_requests") == 1, timeout=10)  # normal arrived first
            urgent = pool.submit(lambda: (service.chat("urgent"), order.append("urgent")))
            "".join(busy.iter_text())
            normal.result(timeout=30)
            urgent.result(timeout=30)
    assert order == ["urgent", "normal"]
