"""Websockets through the service, as in the Go llama-swap: a real websocket client (the
`websockets` package), the service as a subprocess, the fake upstream's echo websocket
(`/ws` in `tests/fakes/fake_upstream.py`: frames back as they came, plus text commands
`close`, `drop`, `headers`, `flood N`).

- An `Upgrade: websocket` reaches the model's server with its upgrade fields; a 101 opens a
  tunnel (bytes both ways, unparsed) until either side closes; any other answer is relayed.
- Without `compat.ignoreWebsockets` a websocket is a request: it starts the model and holds
  it (a swap waits) while open. With it: no start (409), no hold, closed when the model stops.
- `/comfyui/…` is the passthrough to `comfyui_auto`; `GET /comfyui/ws` does not start it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.fakes import fake_cmd
from tests.integration.conftest import RunningService, wait_until
from tests.integration.rawhttp import MB, WAIT, Reader, RssWatch, Sender, request, rss
from tests.integration.rawhttp import connect as raw_connect

MIB = 1 << 20
OPEN = 10.0  # seconds a websocket handshake may take (a cold start included)


def ws_url(service: RunningService, path: str) -> str:
    return service.url.replace("http://", "ws://") + path


def open_ws(service: RunningService, path: str, **kwargs: object) -> ClientConnection:
    return connect(ws_url(service, path), max_size=None, open_timeout=OPEN, close_timeout=2, **kwargs)  # type: ignore[arg-type]


def upstream_stats(service: RunningService, model: str) -> dict:
    return service.http.get(f"/upstream/{model}/stats").json()


def inflight(service: RunningService) -> list[dict]:
    return service.http.get("/api/inflight").json()["requests"]


def pid(service: RunningService, model: str) -> int | None:
    return service.health()["models"].get(model, {}).get("pid")


def models(**entries: str) -> str:
    return "healthCheckTimeout: 15\nmodels:\n" + "".join(f"  {name}:\n{body}" for name, body in entries.items())


def model(name: str, extra: str = "") -> str:
    return f"    cmd: {fake_cmd(name=name)}\n{extra}"


IGNORING = "    compat:\n      ignoreWebsockets: true\n"


# ----------------------------------------------------------------------------- the tunnel


def test_echo_through_upstream_starts_the_model_and_frames_flow_both_ways(start_service):
    service = start_service(models(m=model("m")))
    assert pid(service, "m") is None
    with open_ws(service, "/upstream/m/ws") as ws:
        assert pid(service, "m") is not None  # the upgrade started the model
        ws.send("hello")
        assert ws.recv(timeout=WAIT) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=WAIT) == b"\x00\x01binary\xff"
        large = os.urandom(MIB + MIB // 2)
        ws.send(large)
        assert ws.recv(timeout=WAIT) == large
        for i in range(2000):  # many small frames, sent before any is read back
            ws.send(f"m{i}")
        assert [ws.recv(timeout=WAIT) for _ in range(2000)] == [f"m{i}" for i in range(2000)]
        ws.send("headers")
        seen = {k.lower(): v for k, v in json.loads(ws.recv(timeout=WAIT)).items()}
        assert seen["upgrade"] == "websocket" and "upgrade" in seen["connection"].lower()
        assert "sec-websocket-key" in seen and seen["sec-websocket-version"] == "13"
        assert [(r["model"], r["path"]) for r in inflight(service)] == [("m", "/ws")]  # an in-flight request while open
    assert wait_until(lambda: upstream_stats(service, "m")["ws_open"] == 0)  # the client's close reached it
    assert wait_until(lambda: inflight(service) == [])
    metrics = service.http.get("/metrics").text
    assert 'llamaswap_requests_total{model="m",path="other",status="101"} 1.0' in metrics
    # As in the Go version, the activity log has inference POSTs only: a websocket is in
    # flight while open and counted in the metrics, but it is not an activity row.
    assert service.http.get("/api/metrics/activity").json()["total"] == 0


def test_a_websocket_by_query_model_is_tunnelled(start_service):
    service = start_service(models(m=model("m")))
    with open_ws(service, "/ws?model=m") as ws:
        ws.send("via the query")
        assert ws.recv(timeout=WAIT) == "via the query"


def test_the_upstream_closing_closes_the_client(start_service):
    service = start_service(models(m=model("m")))
    with open_ws(service, "/upstream/m/ws") as ws:
        ws.send("close")
        with pytest.raises(ConnectionClosedOK) as closed:
            ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    with open_ws(service, "/upstream/m/ws") as ws:
        ws.send("drop")  # no close frame: the TCP connection ends
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=WAIT)
    assert service.chat("m").status_code == 200
    assert wait_until(lambda: inflight(service) == [])


def test_the_client_leaving_closes_the_upstream_side(start_service):
    service = start_service(models(m=model("m")))
    with open_ws(service, "/upstream/m/ws") as ws:
        ws.send("x")
        assert ws.recv(timeout=WAIT) == "x"
        assert upstream_stats(service, "m")["ws_open"] == 1
        ws.socket.close()  # gone without a close handshake
        assert wait_until(lambda: upstream_stats(service, "m")["ws_open"] == 0)
    assert wait_until(lambda: inflight(service) == [])


def test_an_upgrade_the_upstream_refuses_is_relayed(start_service):
    service = start_service(models(m=model("m")))
    for path, status in (("/upstream/m/ws?reject=400", 400), ("/upstream/m/no-such-socket", 404)):
        with pytest.raises(InvalidStatus) as refused:
            open_ws(service, path)
        response = refused.value.response
        assert response.status_code == status
        assert response.headers["X-Upstream-Name"] == "m"  # the upstream's own answer
    assert service.chat("m").status_code == 200


def test_a_swap_waits_while_a_websocket_holds_the_model(start_service):
    service = start_service(models(a=model("a"), b=model("b")))
    with open_ws(service, "/upstream/a/ws") as ws:
        ws.send("holding")
        assert ws.recv(timeout=WAIT) == "holding"
        answers: list[int] = []
        swap = threading.Thread(target=lambda: answers.append(service.chat("b").status_code))
        swap.start()
        assert wait_until(lambda: service.metric("llamaswap_queued_requests") == 1)  # waits behind the tunnel
        ws.send("still here")
        assert ws.recv(timeout=WAIT) == "still here"
        assert answers == [] and pid(service, "b") is None
    swap.join(WAIT)
    assert answers == [200] and pid(service, "a") is None


def test_unloading_the_model_closes_its_websockets(start_service):
    service = start_service(models(m=model("m")))
    with open_ws(service, "/upstream/m/ws") as ws:
        assert service.http.delete("/upstream/m").json()["status"] == "ok"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT)


def test_api_keys_apply_to_websockets_and_are_not_forwarded(start_service):
    service = start_service("apiKeys: [sekrit]\n" + models(m=model("m")))
    with pytest.raises(InvalidStatus) as refused:
        open_ws(service, "/upstream/m/ws")
    assert refused.value.response.status_code == 401
    assert pid(service, "m") is None
    with open_ws(service, "/upstream/m/ws", additional_headers={"Authorization": "Bearer sekrit"}) as ws:
        ws.send("headers")
        seen = {k.lower() for k in json.loads(ws.recv(timeout=WAIT))}
        assert "authorization" not in seen


def test_service_shutdown_closes_websockets_at_once(start_service):
    service = start_service(models(m=model("m")))
    with open_ws(service, "/upstream/m/ws") as ws:
        ws.send("x")
        assert ws.recv(timeout=WAIT) == "x"
        began = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT)
        assert time.monotonic() - began < 2.0  # not held for the drain of requests in flight
    assert service.proc.wait(WAIT) == 0


# ----------------------------------------------------------------------------- compat.ignoreWebsockets


def test_ignored_websockets_do_not_start_the_model_nor_hold_it(start_service):
    service = start_service(models(m=model("m", IGNORING), other=model("other")))
    with pytest.raises(InvalidStatus) as refused:
        open_ws(service, "/upstream/m/ws")
    assert refused.value.response.status_code == 409
    assert b"'m' is not loaded" in refused.value.response.body
    assert pid(service, "m") is None  # not started
    assert service.http.get("/upstream/m/load").status_code == 200
    with open_ws(service, "/upstream/m/ws") as ws:
        ws.send("echo")
        assert ws.recv(timeout=WAIT) == "echo"
        assert inflight(service) == []  # not an in-flight request
        assert service.chat("other").status_code == 200  # the swap did not wait for it
        with pytest.raises(ConnectionClosed):  # and its model's stop closed it
            ws.recv(timeout=WAIT)
    assert pid(service, "m") is None


# ----------------------------------------------------------------------------- /comfyui


def test_comfyui_passthrough(start_service):
    service = start_service(models(comfyui_auto=model("comfy")))
    plain = httpx.Client(base_url=service.url, timeout=WAIT, follow_redirects=False)
    redirect = plain.get("/comfyui?token=v")
    assert (redirect.status_code, redirect.headers["Location"]) == (301, "/comfyui/?token=v")
    redirect = plain.post("/comfyui", content=b"x")
    assert (redirect.status_code, redirect.headers["Location"]) == (308, "/comfyui/")
    with pytest.raises(InvalidStatus) as refused:  # its tab's websocket does not load it
        open_ws(service, "/comfyui/ws?clientId=abc")
    assert refused.value.response.status_code == 409
    assert plain.get("/comfyui/ws/sub").status_code == 409
    assert pid(service, "comfyui_auto") is None
    slots = plain.get("/comfyui/slots")  # any other request starts it
    assert slots.status_code == 200 and slots.headers["X-Upstream-Name"] == "comfy"
    with open_ws(service, "/comfyui/ws?clientId=abc") as ws:
        ws.send("progress")
        assert ws.recv(timeout=WAIT) == "progress"
        assert inflight(service) == []  # ignoreWebsockets is forced for it


def test_comfyui_without_its_model_is_404(start_service):
    service = start_service(models(m=model("m")))
    answer = service.http.get("/comfyui/")
    assert answer.status_code == 404 and "comfyui_auto" in answer.json()["error"]


# ----------------------------------------------------------------------------- hostile clients


def ws_head(path: str) -> bytes:
    return request("GET", path, headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                         ("Sec-WebSocket-Version", "13"),
                                         ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])


def masked_text(text: str) -> bytes:
    """One client-to-server text frame (clients must mask, RFC 6455 §5.3)."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def masked_binary_frames(count: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``count`` client binary frames of ``size`` zero bytes (masked with zeros: the same bytes)."""
    frame = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0" + bytes(size)
    for _ in range(count):
        yield frame


def test_garbage_after_a_websocket_upgrade_ends_that_connection_only(start_service):
    service = start_service(models(m=model("m")))
    sock = raw_connect(service)
    sock.sendall(ws_head("/upstream/m/ws") + b"\xff\xffnot a websocket frame")  # reserved bits and opcode
    reader = Reader(sock)
    switched = reader.response(head_request=True)
    assert switched.status == 101
    assert reader.rest() == b"\x88\x02\x03\xea"  # the upstream's close frame, 1002 (protocol error), then the end
    assert "Traceback" not in service.log()
    assert service.chat("m").status_code == 200


def test_a_non_websocket_upgrade_is_served_plain_then_closed(start_service):
    service = start_service(models(m=model("m")))
    sock = raw_connect(service)
    sock.sendall(request("GET", "/upstream/m/slots", headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")])
                 + b"garbage that is not HTTP")
    reader = Reader(sock)
    answer = reader.response()
    assert answer.status == 200 and answer.header("Connection") == "close"
    reader.expect_close()


def test_a_client_that_never_reads_holds_the_upstream_back(start_service):
    service = start_service(models(m=model("m")))
    assert service.http.get("/upstream/m/load").status_code == 200
    sock = raw_connect(service, rcvbuf=64 * 1024)
    sock.sendall(ws_head("/upstream/m/ws"))
    reader = Reader(sock)
    assert reader.response(head_request=True).status == 101
    baseline = rss(service.proc.pid)
    with RssWatch(service.proc.pid) as watch:
        sock.sendall(masked_text("flood 300"))  # 300 MiB the client never reads

        def settled() -> bool:
            first = upstream_stats(service, "m")["ws_flood_sent"]
            time.sleep(0.5)  # the upstream blocked: nothing more is sent in this time
            return first > 0 and upstream_stats(service, "m")["ws_flood_sent"] == first

        assert wait_until(settled, timeout=30)
    sent = upstream_stats(service, "m")["ws_flood_sent"]
    assert sent < 64 * MIB, f"{sent} bytes went out: the service buffered them"
    assert watch.peak - baseline < 40 * MB
    sock.close()
    assert wait_until(lambda: upstream_stats(service, "m")["ws_open"] == 0)


def test_an_upstream_that_does_not_read_holds_the_client_back(start_service):
    service = start_service(models(m=model("m")))
    assert service.http.get("/upstream/m/load").status_code == 200
    sock = raw_connect(service, sndbuf=64 * 1024, timeout=0.5)
    sock.sendall(ws_head("/upstream/m/ws"))
    assert Reader(sock).response(head_request=True).status == 101
    sock.sendall(masked_text("stall 30"))  # the upstream reads nothing more for 30 s
    baseline = rss(service.proc.pid)
    sender = Sender(sock, masked_binary_frames(4800))  # 300 MiB
    with RssWatch(service.proc.pid) as watch:
        sender.start()
        assert wait_until(lambda: sender.stalled_for() > 1.0, timeout=30)  # the service stopped reading it
    sender.stop()
    assert sender.sent < 64 * MIB, f"the service took {sender.sent} bytes the upstream did not read"
    assert watch.peak - baseline < 40 * MB
