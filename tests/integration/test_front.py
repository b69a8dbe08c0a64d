"""The front (wire/front.py) and the lane, on the wire: what a client of any kind sees.

Every integration test goes through them; these aim at what is particular to the front: one
connection mixing lane and bridged (aiohttp) requests, pipelining,
chunked and `Expect: 100-continue` uploads, HTTP/1.0, malformed requests, disconnects,
and upstreams that close their connections.
"""

from __future__ import annotations

import json

import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until
from tests.integration.rawhttp import Reader, connect, request

CONFIG = f"""
healthCheckTimeout: 15
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=3)}
  beta:
    cmd: {fake_cmd(name="beta", chunks=3)}
"""

CHAT = json.dumps({"model": "alpha", "messages": HI}).encode()


@pytest.fixture
def svc(start_service) -> RunningService:
    service = start_service(CONFIG)
    assert service.chat("alpha").status_code == 200  # ready: the next requests are served at once
    return service


def _post(path: str, body: bytes, *, extra: tuple[tuple[str, str], ...] = (), version: str = "1.1") -> bytes:
    return request("POST", path, body, headers=[("Content-Type", "application/json"), *extra], version=version)


def test_one_connection_mixes_lane_and_bridged_requests(svc: RunningService) -> None:
    """A client that keeps one connection (OpenWebUI, the SDKs) for everything gets every
    answer right, in order, whichever side serves it."""
    with connect(svc) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(_post("/v1/chat/completions", CHAT))
            answer = reader.response()
            assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "hello from alpha"
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = reader.response()
            assert answer.status == 200 and {m["id"] for m in answer.json()["data"]} == {"alpha", "beta"}
        sock.sendall(_post("/v1/chat/completions", json.dumps({"model": "beta", "messages": HI}).encode()))
        answer = reader.response()  # a swap: the lane waits for it
        assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "hello from beta"


def test_pipelined_requests_are_answered_in_order(svc: RunningService) -> None:
    bodies = [json.dumps({"model": "alpha", "messages": [{"role": "user", "content": f"n{i}"}]}).encode()
              for i in range(3)]
    with connect(svc) as sock:
        reader = Reader(sock)
        sock.sendall(b"".join(_post("/v1/chat/completions", body) for body in bodies)
                     + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        for _ in bodies:
            answer = reader.response()
            assert answer.status == 200 and answer.json()["model"] == "alpha"
        answer = reader.response()
        assert answer.status == 200 and answer.json()["status"] == "ok"


def test_chunked_upload_reaches_the_upstream_whole(svc: RunningService) -> None:
    body = json.dumps({"model": "alpha", "messages": HI, "pad": "x" * 5000}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100], body[100:4000], body[4000:]))
    with connect(svc) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        answer = Reader(sock).response()
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "hello from alpha"


def test_expect_100_continue_gets_an_interim_answer(svc: RunningService) -> None:
    """curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for it."""
    with connect(svc) as sock:
        head = _post("/v1/chat/completions", CHAT, extra=(("Expect", "100-continue"),))
        sock.sendall(head[: -len(CHAT)])
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(CHAT)
        answer = Reader(sock).response()
    assert answer.status == 200 and answer.json()["model"] == "alpha"


def test_http_1_0_client_is_answered_and_disconnected(svc: RunningService) -> None:
    with connect(svc) as sock:
        sock.sendall(_post("/v1/chat/completions", CHAT, version="1.0"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert json.loads(body)["model"] == "alpha"


def test_malformed_request_gets_400_and_the_service_goes_on(svc: RunningService) -> None:
    with connect(svc) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        assert Reader(sock).response().status == 400
    assert svc.chat("alpha").status_code == 200


def test_body_over_the_limit_is_refused_by_its_announced_length(start_service) -> None:
    service = start_service(CONFIG.replace("healthCheckTimeout: 15", "healthCheckTimeout: 15\nmaxBodyMB: 1"))
    assert service.chat("alpha").status_code == 200
    with connect(service) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2000000\r\n\r\n")
        answer = Reader(sock).response()
    assert answer.status == 413 and "maxBodyMB" in answer.error()


def test_client_leaving_mid_stream_is_logged_and_frees_the_upstream(start_service) -> None:
    service = start_service(f"""
        models:
          slow:
            cmd: {fake_cmd(name="slow", chunks=200, chunk_delay=0.05)}
        """)
    assert service.chat("slow").status_code == 200
    body = json.dumps({"model": "slow", "messages": HI, "stream": True}).encode()
    with connect(service) as sock:
        sock.sendall(_post("/v1/chat/completions", body))
        received = b""
        while b"data:" not in received:  # the first event has arrived
            received += sock.recv(65536)
    assert wait_until(lambda: service.http.get("/api/inflight").json()["requests"] == [], timeout=10)
    rows = service.http.get("/api/metrics/activity", params={"sort": "id", "order": "desc"}).json()["data"]
    assert rows[0]["resp_status_code"] == 499
    stats = {}
    assert wait_until(lambda: stats.update(_upstream_stats(service, "slow")) or stats.get("cancelled", 0) >= 1)


def _upstream_stats(service: RunningService, model: str) -> dict:
    return service.http.get(f"/upstream/{model}/stats").json()


def test_upstream_closing_after_each_answer_is_reconnected(start_service) -> None:
    """Some servers close the connection after every answer (llama-server after a stream):
    the next request must not fail on the dead pooled connection."""
    service = start_service(f"""
        models:
          closer:
            cmd: {fake_cmd(name="closer", chunks=3, close_after_stream=True)}
        """)
    client = service.openai()
    for _ in range(6):
        stream = client.chat.completions.create(model="closer", messages=HI, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "tok0 tok1 tok2 "


def test_many_requests_on_kept_alive_connections(svc: RunningService) -> None:
    for _ in range(200):
        assert svc.chat("alpha").status_code == 200
    counts = [line for line in svc.http.get("/metrics").text.splitlines()
              if line.startswith('llamaswap_requests_total{model="alpha"')]
    assert counts and float(counts[0].split()[-1]) >= 201
