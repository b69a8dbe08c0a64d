"""Captures (`captureBuffer`, `GET /api/captures/{id}`): the service as a subprocess, fake
upstreams as real processes, the `openai` client where a user would use it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, serving

KEY = "sk-capture-test-0123456789"
COOKIE = "session=s3cr3t"
CONFIG = f"""
    captureBuffer: 5
    models:
      chat:
        cmd: {fake_cmd(name="chat", chunks=6, set_cookie=COOKIE)}
"""


def write_config(tmp: Path, text: str) -> Path:
    path = tmp / "config.yaml"
    path.write_text(f"logToStdout: both\nstartPort: {20000 + os.getpid() % 10000}\n{text}")
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    tmp = tmp_path_factory.mktemp("captures")
    with serving(write_config(tmp, CONFIG.replace("\n    ", "\n")), tmp / "service.log") as running:
        yield running


def last_row(service: RunningService, **headers: str) -> dict[str, Any]:
    response = service.http.get("/api/metrics/activity", params={"limit": 1}, headers=headers)
    assert response.status_code == 200
    return response.json()["data"][0]


def capture_of(service: RunningService, row_id: int, **headers: str) -> dict[str, Any]:
    response = service.http.get(f"/api/captures/{row_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def body(capture: dict[str, Any], which: str) -> bytes:
    return base64.b64decode(capture[which])


def test_a_chat_completion_and_its_answer_are_captured(service: RunningService) -> None:
    completion = service.openai().chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
    row = last_row(service)
    assert row["has_capture"] is True
    capture = capture_of(service, row["id"])
    assert set(capture) == {"id", "req_path", "req_headers", "req_body", "resp_status_code", "resp_headers",
                            "resp_body"}
    assert capture["id"] == row["id"] and capture["req_path"] == "/v1/chat/completions"
    assert json.loads(body(capture, "req_body")) == {"model": "chat", "messages": HI}
    assert capture["resp_status_code"] == 200
    answer = json.loads(body(capture, "resp_body"))
    assert answer["choices"][0]["message"]["content"] == completion.choices[0].message.content
    assert answer["id"] == completion.id
    assert capture["resp_headers"]["Content-Type"].startswith("application/json")


def test_a_stream_is_captured_event_by_event_and_reaches_the_client_unchanged(service: RunningService) -> None:
    request = {"model": "chat", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    with service.http.stream("POST", "/v1/chat/completions", json=request) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200
    events = [event for event in received.split(b"\n\n") if event]
    assert len(events) >= 8 and events[-1] == b"data: [DONE]"  # 6 content chunks, usage, [DONE]
    capture = capture_of(service, last_row(service)["id"])
    assert body(capture, "resp_body") == received
    assert capture["resp_headers"]["Content-Type"].startswith("text/event-stream")
    assert "Transfer-Encoding" not in capture["resp_headers"]  # hop-by-hop: not the answer's
    # a stream read by the openai client: the capture holds the text it showed
    stream = service.openai().chat.completions.create(model="chat", messages=HI, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    captured = body(capture_of(service, last_row(service)["id"]), "resp_body")
    assert text and text == "".join(content_of(captured))


def content_of(sse: bytes) -> Iterator[str]:
    """The delta contents of an OpenAI chat stream."""
    for event in sse.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in json.loads(event[6:])["choices"]:
                yield choice["delta"].get("content") or ""


def test_credentials_are_redacted_in_both_directions(service: RunningService) -> None:
    sent = {
        "Authorization": "Bearer sk-user", "Proxy-Authorization": "Basic eDp5", "x-api-key": "sk-other",
        "Cookie": "a=b", "X-Trace": "kept",
    }
    assert service.chat("chat", max_tokens=3).status_code == 200  # without those headers, for contrast
    response = service.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI}, headers=sent)
    assert response.status_code == 200 and response.headers["set-cookie"] == COOKIE  # the client gets it
    capture = capture_of(service, last_row(service)["id"])
    shown = {name.lower(): value for name, value in capture["req_headers"].items()}
    for name in ("authorization", "proxy-authorization", "x-api-key", "cookie"):
        assert shown[name] == "[REDACTED]"
    assert shown["x-trace"] == "kept"
    assert capture["resp_headers"]["Set-Cookie"] == "[REDACTED]"
    text = json.dumps(capture)
    assert "sk-user" not in text and "sk-other" not in text and "s3cr3t" not in text and "eDp5" not in text


def test_unknown_and_malformed_ids(service: RunningService) -> None:
    missing = service.http.get("/api/captures/999999")
    assert missing.status_code == 404 and missing.json() == {"error": "capture not found"}
    malformed = service.http.get("/api/captures/abc")
    assert malformed.status_code == 400 and malformed.json() == {"error": "invalid capture ID"}


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[RunningService]:
    """captureBuffer: 1 (MB)."""
    text = f"captureBuffer: 1\nmodels:\n  chat:\n    cmd: {fake_cmd(name='chat')}\n"
    with serving(write_config(tmp_path, text), tmp_path / "service.log") as running:
        yield running


def incompressible(n_bytes: int) -> str:
    return os.urandom(n_bytes // 2).hex()  # hex of random bytes: zstd gets it to about half


def test_the_oldest_captures_are_evicted_to_stay_within_the_budget(tiny: RunningService) -> None:
    ids = []
    for _ in range(4):  # ~300 KB each once compressed: the fourth does not fit beside the first three
        content = incompressible(600_000)
        assert tiny.chat("chat", messages=[{"role": "user", "content": content}]).status_code == 200
        ids.append(last_row(tiny)["id"])
    assert tiny.http.get(f"/api/captures/{ids[0]}").status_code == 404
    for row_id in ids[1:]:
        assert tiny.http.get(f"/api/captures/{row_id}").status_code == 200
    rows = {row["id"]: row["has_capture"] for row in tiny.http.get("/api/metrics/activity").json()["data"]}
    assert [rows[row_id] for row_id in ids] == [False, True, True, True]


def test_a_capture_larger_than_the_budget_is_not_kept(tiny: RunningService) -> None:
    assert tiny.chat("chat").status_code == 200
    small = last_row(tiny)["id"]
    assert tiny.chat("chat", messages=[{"role": "user", "content": incompressible(2_400_000)}]).status_code == 200
    big = last_row(tiny)
    assert big["has_capture"] is False
    assert tiny.http.get(f"/api/captures/{big['id']}").status_code == 404
    assert tiny.http.get(f"/api/captures/{small}").status_code == 200  # nothing was evicted for it
    assert f"capture {big['id']} not kept" in tiny.log()


def test_captures_are_off_with_a_zero_buffer(start_service) -> None:  # type: ignore[no-untyped-def]
    service = start_service(f"captureBuffer: 0\nmodels:\n  chat:\n    cmd: {fake_cmd(name='chat')}\n")
    assert service.chat("chat").status_code == 200
    row = last_row(service)
    assert row["has_capture"] is False
    response = service.http.get(f"/api/captures/{row['id']}")
    assert response.status_code == 404 and response.json() == {"error": "capture not found"}


def test_the_endpoint_needs_the_key_and_configured_keys_are_redacted_anywhere(start_service) -> None:  # type: ignore[no-untyped-def]
    service = start_service(f"apiKeys: [{KEY}]\ncaptureBuffer: 1\nmodels:\n  chat:\n    cmd: {fake_cmd(name='chat')}\n")
    auth = {"Authorization": f"Bearer {KEY}"}
    response = service.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI},
                                 headers={**auth, "X-Forwarded-Key": f"key={KEY}"})
    assert response.status_code == 200
    row = last_row(service, **auth)
    refused = service.http.get(f"/api/captures/{row['id']}")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
    assert service.http.get(f"/api/captures/{row['id']}", headers={"x-api-key": "wrong"}).status_code == 401
    capture = capture_of(service, row["id"], **{"x-api-key": KEY})
    shown = {name.lower(): value for name, value in capture["req_headers"].items()}
    assert shown["authorization"] == "[REDACTED]" and shown["x-forwarded-key"] == "[REDACTED]"
    assert KEY not in json.dumps(capture)
    with httpx.Client(base_url=service.url) as client:
        assert client.get(f"/api/captures/{row['id']}", auth=("anyone", KEY)).status_code == 200
