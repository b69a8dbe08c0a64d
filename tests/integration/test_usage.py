"""Token usage the upstream reports ends up in /metrics: counters equal what the client saw."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until


def usage_metrics(service: RunningService, model: str) -> dict[str, float]:
    """`llamaswap_tokens_total` by kind, and the rate histograms' sums and counts, for ``model``."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(service.http.get("/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "llamaswap_tokens_total":
                found[sample.labels["kind"]] = sample.value
            elif sample.name.endswith(("tokens_per_second_sum", "tokens_per_second_count")):
                found[sample.name.removeprefix("llamaswap_")] = sample.value
    return found


def expected(timings: dict[str, Any]) -> dict[str, float]:
    return {
        "prompt": timings["prompt_n"],
        "generated": timings["predicted_n"],
        "prompt_tokens_per_second_sum": timings["prompt_per_second"],
        "prompt_tokens_per_second_count": 1,
        "generation_tokens_per_second_sum": timings["predicted_per_second"],
        "generation_tokens_per_second_count": 1,
    }


def sse_events(body: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[len(b"data: "):])
        for line in body.splitlines()
        if line.startswith(b"data: {")
    ]


def assert_metrics_become(service: RunningService, model: str, want: dict[str, float]) -> None:
    # The response's end reaches the client just before the service records it.
    assert wait_until(lambda: usage_metrics(service, model) == want, timeout=5), usage_metrics(service, model)


def test_non_streamed_chat_usage_is_counted(start_service) -> None:
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', chunks=4)}\n")
    body = service.chat("m").json()
    usage, timings = body["usage"], body["timings"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (timings["prompt_n"], timings["predicted_n"])
    assert_metrics_become(service, "m", expected(timings))


def test_streamed_chat_usage_is_counted(start_service) -> None:
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', chunks=6)}\n")
    request = {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    response = service.http.post("/v1/chat/completions", json=request)
    events = sse_events(response.content)
    usage = next(e["usage"] for e in events if e.get("usage"))
    timings = [e["timings"] for e in events if "timings" in e][-1]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (timings["prompt_n"], timings["predicted_n"])
    assert usage["completion_tokens"] == 6
    assert_metrics_become(service, "m", expected(timings))


def test_usage_adds_up_over_requests_and_skips_errors(start_service) -> None:
    service = start_service(
        f"""
        models:
          m:
            cmd: {fake_cmd(name="m", chunks=2)}
          broken:
            cmd: {fake_cmd(name="broken", error_status=500)}
        """
    )
    first = service.chat("m").json()["usage"]
    second = service.chat("m", messages=[{"role": "user", "content": "a longer question " * 10}]).json()["usage"]
    assert service.chat("broken").status_code == 500
    assert service.http.get("/upstream/m/props").status_code == 200
    want_prompt = first["prompt_tokens"] + second["prompt_tokens"]
    assert wait_until(lambda: usage_metrics(service, "m").get("prompt") == want_prompt, timeout=5)
    assert usage_metrics(service, "m")["generated"] == first["completion_tokens"] + second["completion_tokens"]
    assert usage_metrics(service, "broken") == {}


def test_anthropic_stream_through_upstream_path_is_counted(start_service) -> None:
    service = start_service(f"models:\n  m:\n    cmd: {fake_cmd(name='m', chunks=5)}\n")
    request = {"model": "m", "messages": HI, "max_tokens": 50, "stream": True}
    events = sse_events(service.http.post("/upstream/m/v1/messages", json=request).content)
    prompt = next(e["message"]["usage"]["input_tokens"] for e in events if e["type"] == "message_start")
    generated = next(e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta")
    assert_metrics_become(service, "m", {"prompt": prompt, "generated": generated})


def test_loading_state_stream_usage_is_counted(start_service) -> None:
    service = start_service(
        f"""
        sendLoadingState: true
        models:
          m:
            cmd: {fake_cmd(name="m", healthy_after=0.5, chunks=3)}
        """
    )
    response = service.http.post("/v1/chat/completions", json={"model": "m", "messages": HI, "stream": True})
    events = sse_events(response.content)
    assert any(e.get("id") == "llama-swap-loading" for e in events)  # it did go through the loading path
    timings = [e["timings"] for e in events if "timings" in e][-1]
    assert_metrics_become(service, "m", expected(timings))
