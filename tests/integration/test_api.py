"""The /api endpoints a UI or script uses to see what the service is doing: models with
their live state, the event stream, the activity log, in-flight requests and their cancel."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, serving, wait_until
from tests.integration.streams import EventReader, stalled_reader

CONFIG = f"""
    models:
      chat:
        name: Chat model
        description: answers slowly
        cmd: {fake_cmd(name="chat", chunks=4)}
        aliases: [talk]
        capabilities:
          in: [text, image]
          tools: true
      org/slow:
        cmd: {fake_cmd(name="slow", chunks=40, chunk_delay=0.1)}
      loading:
        cmd: {fake_cmd(name="loading", healthy_after=30)}
      broken:
        cmd: {fake_cmd(name="broken", crash_at_start=True)}
      hidden:
        cmd: {fake_cmd(name="hidden")}
        unlisted: true
    """


def models_by_id(service: RunningService) -> dict[str, dict[str, Any]]:
    response = service.http.get("/api/models")
    assert response.status_code == 200
    return {record["id"]: record for record in response.json()}


def state_of(service: RunningService, model: str) -> str:
    return models_by_id(service)[model]["state"]


def stream_chat(service: RunningService, model: str) -> tuple[str, dict[str, Any]]:
    """Stream a chat completion with the openai client: (text, usage)."""
    text, usage = "", None
    stream = service.openai().chat.completions.create(
        model=model, messages=HI, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    assert usage is not None
    return text, usage


def activity(service: RunningService, **params: Any) -> dict[str, Any]:
    response = service.http.get("/api/metrics/activity", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def inflight(service: RunningService) -> list[dict[str, Any]]:
    return service.http.get("/api/inflight").json()["requests"]


def in_background(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``work()`` in a thread; the dict gets its `result` or `error`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as exc:  # the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def service(start_service) -> RunningService:
    return start_service(CONFIG)


def test_api_models_lists_every_model_with_its_state(service: RunningService) -> None:
    models = models_by_id(service)
    assert list(models) == sorted(models)
    assert set(models) == {"chat", "org/slow", "loading", "broken", "hidden"}  # unlisted ones too
    chat = models["chat"]
    assert chat["state"] == "stopped" and chat["pid"] is None and chat["error"] is None
    assert (chat["name"], chat["description"], chat["aliases"]) == ("Chat model", "answers slowly", ["talk"])
    assert set(chat["capabilities"]) == {"vision", "function_calling"}
    assert models["hidden"]["unlisted"] is True

    assert service.chat("talk").status_code == 200
    chat = models_by_id(service)["chat"]
    assert chat["state"] == "ready" and chat["pid"] == service.pid_of("chat")

    assert service.chat("broken").status_code >= 500
    broken = models_by_id(service)["broken"]
    assert broken["state"] == "failed"
    assert "exited" in broken["error"]


def test_unload_one_model_by_id_or_alias(service: RunningService) -> None:
    assert service.chat("chat").status_code == 200
    assert service.http.get("/upstream/org/slow/load").json()["status"] == "ok"
    response = service.http.post("/api/models/unload/talk")
    assert (response.status_code, response.json()) == (200, {"msg": "ok"})
    assert state_of(service, "chat") == "stopped"
    assert state_of(service, "org/slow") == "ready"  # only the one asked for
    assert service.http.post("/api/models/unload/org/slow").status_code == 200  # ids with a slash
    assert state_of(service, "org/slow") == "stopped"
    missing = service.http.post("/api/models/unload/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_event_stream_starts_with_snapshots_then_follows_changes(service: RunningService) -> None:
    reader = EventReader(service)
    try:
        assert reader.status == 200
        assert wait_until(lambda: len(reader.events()) >= 6)
        first = [kind for kind, _ in reader.events()[:6]]
        assert first == ["logData", "logData", "modelStatus", "inflight", "uiConfig", "profileChanged"]
        sources = [data["source"] for data in reader.of_type("logData")[:2]]
        assert sources == ["proxy", "upstream"]
        assert "listening" in reader.of_type("logData")[0]["data"]
        assert {m["id"]: m["state"] for m in reader.of_type("modelStatus")[0]}["chat"] == "stopped"
        assert reader.of_type("inflight")[0] == {"operation": "snapshot", "requests": []}
        assert reader.of_type("profileChanged")[0] == {"active": None}

        text, usage = stream_chat(service, "chat")

        def chat_state(state: str) -> Any:
            return lambda models: any(m["id"] == "chat" and m["state"] == state for m in models)

        reader.wait_for("modelStatus", chat_state("starting"))
        reader.wait_for("modelStatus", chat_state("ready"))
        upsert = reader.wait_for("inflight", lambda d: d["operation"] == "upsert")["request"]
        assert (upsert["model"], upsert["method"], upsert["path"]) == ("chat", "POST", "/v1/chat/completions")
        reader.wait_for("inflight", lambda d: d == {"operation": "remove", "id": upsert["id"]})
        row = reader.wait_for("activity")
        assert (row["model"], row["resp_status_code"]) == ("chat", 200)
        assert (row["prompt_tokens"], row["generated_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        reader.wait_for("logData", lambda d: d["source"] == "upstream" and "chat" in d["data"])
        assert text
    finally:
        reader.close()


def test_streamed_token_counts_in_activity_equal_the_upstreams_usage(service: RunningService) -> None:
    _, streamed = stream_chat(service, "chat")
    plain = service.chat("chat", messages=[{"role": "user", "content": "a much longer question " * 20}]).json()
    assert wait_until(lambda: activity(service)["total"] == 2)
    rows = activity(service)["data"]
    newest, oldest = rows  # newest first
    assert (oldest["prompt_tokens"], oldest["generated_tokens"]) == (
        streamed["prompt_tokens"], streamed["completion_tokens"]
    )
    assert oldest["resp_content_type"].startswith("text/event-stream")
    assert (newest["prompt_tokens"], newest["generated_tokens"]) == (
        plain["usage"]["prompt_tokens"], plain["usage"]["completion_tokens"]
    )
    assert newest["generation_per_second"] == plain["timings"]["predicted_per_second"]
    for row in rows:
        assert row["method"] == "POST" and row["req_path"] == "/v1/chat/completions"
        assert 0 < row["ttfb_ms"] <= row["duration_ms"]
        assert row["error_msg"] is None and row["timestamp"].endswith("Z")


def test_activity_paging_filters_and_errors(service: RunningService) -> None:
    for _ in range(3):
        assert service.chat("chat").status_code == 200
    assert service.chat("broken").status_code >= 500
    assert wait_until(lambda: activity(service)["total"] == 4)
    page = activity(service, limit=2, page=2, order="asc")
    assert (page["page"], page["limit"], page["total"], page["total_pages"]) == (2, 2, 4, 2)
    assert [row["id"] for row in page["data"]] == [3, 4]
    failed = activity(service, model="broken")["data"]
    assert len(failed) == 1 and failed[0]["resp_status_code"] >= 500
    assert "exited" in failed[0]["error_msg"] and failed[0]["prompt_tokens"] is None
    stats = service.http.get("/api/metrics/stats", params={"model": "chat"}).json()
    assert stats["requests"] == 3 and stats["generation_per_second"]["count"] == 3
    bad = service.http.get("/api/metrics/activity", params={"limit": "0"})
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


def test_cancel_a_streaming_request(service: RunningService) -> None:
    def consume() -> str:
        text = ""
        stream = service.openai().chat.completions.create(model="org/slow", messages=HI, stream=True)  # type: ignore[arg-type]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    thread, outcome = in_background(consume)
    assert wait_until(lambda: any(r["bytes"] > 0 for r in inflight(service)), timeout=15)
    (request,) = inflight(service)
    assert request["model"] == "org/slow" and request["client"] == "127.0.0.1"
    response = service.http.post(f"/api/inflight/{request['id']}/cancel")
    assert (response.status_code, response.json()) == (200, {"msg": "ok"})
    thread.join(timeout=15)
    assert isinstance(outcome.get("error"), openai.APIError), outcome
    assert "cancelled" in str(outcome["error"])
    assert inflight(service) == []
    assert wait_until(lambda: activity(service)["total"] == 1)
    assert "cancelled" in activity(service)["data"][0]["error_msg"]
    assert state_of(service, "org/slow") == "ready"  # only the request ended, not the model
    assert service.http.post(f"/api/inflight/{request['id']}/cancel").status_code == 404


def test_cancel_a_request_waiting_for_its_model(service: RunningService) -> None:
    thread, outcome = in_background(lambda: service.chat("loading"))
    assert wait_until(lambda: len(inflight(service)) == 1, timeout=15)
    assert state_of(service, "loading") == "starting"
    request_id = inflight(service)[0]["id"]
    assert service.http.post(f"/api/inflight/{request_id}/cancel").status_code == 200
    thread.join(timeout=15)
    response: httpx.Response = outcome["result"]
    assert response.status_code == 503 and "cancelled" in response.json()["error"]
    assert service.http.post("/api/inflight/x/cancel").status_code == 404


def test_stalled_event_reader_does_not_hold_up_requests(service: RunningService) -> None:
    """A reader that reads nothing while hundreds of events are published: every request
    still completes, the service stays responsive, and a fresh reader sees current state."""
    stalled = [stalled_reader(service, "/api/events") for _ in range(2)]
    try:
        for _ in range(150):
            assert service.chat("chat").status_code == 200
            assert service.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True}).status_code == 200
        assert service.http.get("/health", timeout=5).status_code == 200
        reader = EventReader(service)
        try:
            status = reader.wait_for("modelStatus")
            assert {m["id"]: m["state"] for m in status}["chat"] == "ready"
        finally:
            reader.close()
    finally:
        for sock in stalled:
            sock.close()


def test_activity_persists_in_store_path_across_restarts(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"store:\n  path: {tmp_path / 'activity.db'}\nmodels:\n  m:\n    cmd: {fake_cmd(name='m')}\n"
    )
    with serving(config, tmp_path / "first.log") as first:
        assert first.chat("m").status_code == 200
        assert wait_until(lambda: activity(first)["total"] == 1)
    with serving(config, tmp_path / "second.log") as second:
        assert activity(second)["total"] == 1
        assert second.chat("m").status_code == 200
        assert wait_until(lambda: activity(second)["total"] == 2)
        assert [row["id"] for row in activity(second)["data"]] == [2, 1]


def test_metrics_include_first_byte_memory_and_start_failures(service: RunningService) -> None:
    def sample(name: str, model: str) -> float:
        prefix = f'{name}{{model="{model}"}} '
        lines = service.http.get("/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith(prefix)).split()[-1])

    assert service.chat("chat").status_code == 200
    assert sample("llamaswap_time_to_first_byte_seconds_count", "chat") == 1
    assert sample("llamaswap_model_resident_memory_bytes", "chat") > 1_000_000
    assert service.chat("broken").status_code >= 500  # swaps chat out
    assert sample("llamaswap_start_failures_total", "broken") == 1
    assert "llamaswap_model_resident_memory_bytes{" not in service.http.get("/metrics").text
    assert "process_resident_memory_bytes" in service.http.get("/metrics").text  # the service's own


def test_ui_is_served_from_the_package(service: RunningService) -> None:
    root = service.http.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (302, "/ui/")
    for path in ("/ui/", "/ui/models", "/ui/logs/some/model"):
        page = service.http.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
    assert service.http.get("/ui/no-such-file.js").status_code == 404
    escape = service.http.get("/ui/..%2f..%2fpyproject.toml")
    assert escape.status_code == 400 and "'..' segments" in escape.json()["error"]
    version = service.http.get("/api/version").json()
    assert set(version) == {"version", "commit", "build_date"}
