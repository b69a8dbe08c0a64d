"""The HTTP/1.1 front against hostile and odd clients, on the wire: raw bytes in, bytes out.

Each section is one finding of the front's review; each test says what a client sees. The
service runs as a subprocess on loopback (`start_service`), its models are fake upstream
processes; every wait is bounded by a socket timeout (`rawhttp.WAIT`) or a bounded poll.

The contract (config keys at the top level):

- `maxHeaderKB` (default 64): a request line + header fields over it → 431, JSON error naming
  `maxHeaderKB`, connection closed.
- `maxBodyMB` (default 1024): a larger body → 413 naming `maxBodyMB`, connection closed; it
  applies to pipelined and chunked requests too, and the service never buffers beyond it
  (a request pipelined behind one still being answered is not read until its turn).
- `clientTimeouts.header` (30 s from a head's first byte to its end), `.body` (60 s without a
  byte of a body being waited for), `.idle` (75 s with nothing in progress): header/body →
  408 naming the key (when nothing else is being answered), then close; idle → close.
- Every error the service makes itself is JSON `{"error": "<message>"}`.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.fakes import fake_cmd
from tests.integration.conftest import HI, RunningService, wait_until
from tests.integration.rawhttp import (
    MB,
    WAIT,
    Reader,
    Response,
    RssWatch,
    Sender,
    chat,
    chat_body,
    chunked,
    connect,
    request,
    rss,
    send_until_refused,
)

KIB = 1024
MIB = 1024 * 1024
PEER = "127.0.0.1"


def models_yaml(**models: str) -> str:
    return "models:\n" + "".join(f"  {name}:\n    cmd: {cmd}\n" for name, cmd in models.items())


ALPHA = fake_cmd(name="alpha", chunks=3)
BASIC = "healthCheckTimeout: 15\n" + models_yaml(alpha=ALPHA)


def make_ready(service: RunningService, model: str = "alpha") -> None:
    """A first request starts the model: the next ones find it ready (the fast lane's case)."""
    response = service.chat(model)
    assert response.status_code == 200, response.text


def upstream_stats(service: RunningService, model: str) -> dict:
    """The fake upstream's own counters (`GET /stats` through the passthrough)."""
    with httpx.Client(base_url=service.url, timeout=WAIT) as client:  # a fresh connection each time
        response = client.get(f"/upstream/{model}/stats")
    assert response.status_code == 200, response.text
    return response.json()


def chat_count(service: RunningService, model: str) -> int:
    return upstream_stats(service, model)["by_path"].get("/v1/chat/completions", 0)


def sse_content(body: bytes) -> tuple[str, bool]:
    """The text a chat stream carried, and whether it ended with `data: [DONE]`."""
    text, done = "", False
    for block in body.decode().split("\n\n"):
        if not block.startswith("data: "):
            continue
        payload = block[len("data: "):]
        if payload == "[DONE]":
            done = True
            continue
        for choice in json.loads(payload).get("choices", []):
            text += (choice.get("delta") or {}).get("content") or ""
    return text, done


def assert_whole_stream(answer: Response, n_chunks: int) -> None:
    assert answer.status == 200, answer
    text, done = sse_content(answer.body)
    assert text == "".join(f"tok{i} " for i in range(n_chunks)) and done, f"stream not whole: {answer.body[-400:]!r}"


def assert_chat_answer(answer: Response, model: str = "alpha") -> None:
    assert answer.status == 200, answer
    assert answer.json()["choices"][0]["message"]["content"] == f"hello from {model}", answer


def warm_up(service: RunningService) -> None:
    """Exercise the usual paths (and an error answer) once, so that what they allocate on
    first use is in the idle memory figure."""
    make_ready(service)
    with httpx.Client(base_url=service.url, timeout=WAIT) as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            assert client.post("/v1/chat/completions", json={"model": "alpha", "messages": HI}).status_code == 200
    with connect(service) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n")
        assert Reader(sock).response().status == 400


def idle_rss(service: RunningService) -> int:
    """The service's resident memory once warmed up and idle."""
    warm_up(service)
    return rss(service.proc.pid)


def assert_rss_back(service: RunningService, before: int, what: str, slack: int = 5 * MB) -> None:
    """Resident memory returns to within ``slack`` of ``before`` (polled: frees may lag a moment)."""
    pid = service.proc.pid
    if not wait_until(lambda: rss(pid) - before <= slack, timeout=5, interval=0.1):
        grown = (rss(pid) - before) / MB
        raise AssertionError(f"after {what}, the service's RSS is {grown:.1f} MB above its idle "
                             f"{before / MB:.1f} MB (allowed: {slack / MB:.0f} MB)")


# =========================================================================== 1. the request head is limited


def header_flood(total: int) -> Iterator[bytes]:
    """A GET whose head never ends: header field lines, ``total`` bytes in all."""
    yield b"GET /health HTTP/1.1\r\nHost: test\r\n"
    block = b"".join(b"X-Flood-%04d: %s\r\n" % (i, b"v" * 100) for i in range(2400))  # ~280 KB
    for _ in range(total // len(block)):
        yield block


def endless_line(total: int) -> Iterator[bytes]:
    """A GET with one header field line that never ends, ``total`` bytes long."""
    yield b"GET /health HTTP/1.1\r\nHost: test\r\nX-Endless: "
    block = b"a" * (256 * KIB)
    for _ in range(total // len(block)):
        yield block


@pytest.mark.parametrize("flood", [header_flood, endless_line], ids=["many-lines", "one-endless-line"])
def test_endless_request_head_gets_431_then_close_and_no_memory_kept(
    start_service, flood: Callable[[int], Iterator[bytes]]
) -> None:
    """A client sending 32 MiB of head that never ends gets `431 {"error": "...maxHeaderKB..."}`
    once the head passes 64 KiB (the default), then the connection ends; the service keeps
    none of it (its RSS stays within 5 MB of idle)."""
    service = start_service(BASIC)
    before = idle_rss(service)
    with connect(service) as sock:
        sent, how = send_until_refused(sock, flood(32 * MIB), stall=5)
        grown = (rss(service.proc.pid) - before) / MB
        reader = Reader(sock)
        try:
            answer = reader.response()
        except AssertionError as exc:
            raise AssertionError(f"{sent} bytes of head sent ({how}), the service's RSS {grown:.0f} MB above "
                                 f"idle, and no 431: {exc}") from None
        assert answer.status == 431, f"{answer} (after {sent} bytes sent, sending {how})"
        assert "maxHeaderKB" in answer.error()
        reader.expect_close(" after the 431")
    assert_rss_back(service, before, f"a {sent}-byte head")


def padded_head(request_bytes: bytes, size: int) -> bytes:
    """``request_bytes`` with header lines added so that its head (request line, fields and
    the blank line) is exactly ``size`` bytes."""
    head, body = request_bytes.split(b"\r\n\r\n", 1)
    pad = []
    left = size - len(head) - 4
    while left > 0:
        line = b"\r\nX-Pad-%04d: " % len(pad)
        value = min(1000, max(left - len(line), 1))
        pad.append(line + b"p" * value)
        left -= len(line) + value
    padded = head + b"".join(pad) + b"\r\n\r\n"
    assert len(padded) == size, (len(padded), size)
    return padded + body


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_head_just_under_the_default_limit_is_served(start_service, kind: str) -> None:
    """60 KiB of header fields (the default limit is 64 KiB) are a normal request: 200."""
    service = start_service(BASIC)
    make_ready(service)
    raw = request("GET", "/health") if kind == "health" else chat("alpha")
    raw = padded_head(raw, 60 * KIB)
    assert 59 * KIB < raw.index(b"\r\n\r\n") < 61 * KIB
    with connect(service) as sock:
        sock.sendall(raw)
        answer = Reader(sock).response()
    assert answer.status == 200, answer
    if kind == "chat":
        assert_chat_answer(answer)


def test_head_limit_follows_maxHeaderKB(start_service) -> None:
    """With `maxHeaderKB: 8`, a 7 KiB head is served and a 9 KiB one gets 431 and a close."""
    service = start_service("maxHeaderKB: 8\n" + BASIC)
    with connect(service) as sock:
        sock.sendall(padded_head(request("GET", "/health"), 7 * KIB))
        assert Reader(sock).response().status == 200
    with connect(service) as sock:
        sock.sendall(padded_head(request("GET", "/health"), 9 * KIB))
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 431 and "maxHeaderKB" in answer.error(), answer
        reader.expect_close(" after the 431")


# =========================================================================== 2. maxBodyMB, pipelined and chunked


def body_blocks(total: int, block: int = 256 * KIB) -> Iterator[bytes]:
    data = b"x" * block
    for _ in range(total // block):
        yield data


@pytest.mark.parametrize("method,target", [("PUT", "/upstream/alpha/echo"), ("POST", "/v1/chat/completions")])
def test_oversized_body_pipelined_behind_a_stream_gets_413_without_being_buffered(
    start_service, method: str, target: str
) -> None:
    """`maxBodyMB: 1`. On one connection: a slow streamed chat (2 s), then a request announcing
    a 64 MiB body, whose bytes the client pushes as fast as the service takes them. The
    client gets the whole stream, then `413 {"error": "...maxBodyMB..."}`, then the end of the
    connection; meanwhile the service does not read the pipelined body (the client cannot
    push tens of MiB while the stream runs) and its memory does not grow by tens of MB."""
    service = start_service("maxBodyMB: 1\n" + BASIC)
    before = idle_rss(service)
    first = chat("alpha", stream=True, n_chunks=20, chunk_delay=0.1)
    second = request(method, target, headers=[("Content-Type", "application/octet-stream"),
                                              ("Content-Length", str(64 * MIB))])
    sock = connect(service, sndbuf=64 * KIB)
    sender = Sender(sock, body_blocks(64 * MIB))
    try:
        sock.sendall(first + second)
        reader = Reader(sock)
        with RssWatch(service.proc.pid) as watch:
            sender.start()
            answer = reader.response()
        accepted = sender.sent  # pipelined body bytes the service took while the stream ran
        assert_whole_stream(answer, 20)
        assert watch.peak - before < 16 * MB, (
            f"the service's RSS grew by {(watch.peak - before) / MB:.0f} MB while a 64 MiB body waited its turn")
        assert accepted < 24 * MIB, f"the service read {accepted} bytes of a pipelined body before its turn"
        refused = reader.response()
        assert refused.status == 413 and "maxBodyMB" in refused.error(), refused
        reader.expect_close(" after the 413")
    finally:
        sender.stop()
        sock.close()


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/upstream/alpha/echo"])
def test_chunked_body_passing_the_limit_gets_413_then_close(start_service, target: str) -> None:
    """`maxBodyMB: 1`: a chunked upload that goes on past 1 MiB (8 MiB offered) gets
    `413 {"error": "...maxBodyMB..."}` once it passes the limit, then the connection ends."""
    service = start_service("maxBodyMB: 1\n" + BASIC)
    make_ready(service)
    head = (f"POST {target} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    opening = b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "pad": "'

    def upload() -> Iterator[bytes]:
        yield head + b"%x\r\n%s\r\n" % (len(opening), opening)
        piece = b"y" * (64 * KIB)
        for _ in range(128):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)

    with connect(service) as sock:
        sent, how = send_until_refused(sock, upload(), stall=5)
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 413 and "maxBodyMB" in answer.error(), f"{answer} ({sent} bytes sent, {how})"
        reader.expect_close(" after the 413")


# =========================================================================== 3. what follows a request


GARBAGE = b"this is not http\r\n\r\n"


def health_or_chat(kind: str, **kwargs: object) -> bytes:
    return request("GET", "/health", **kwargs) if kind == "health" else chat("alpha", **kwargs)  # type: ignore[arg-type]


def assert_first_answer(kind: str, answer: Response) -> None:
    if kind == "health":
        assert answer.status == 200 and answer.json()["status"] == "ok", answer
    else:
        assert_chat_answer(answer)


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_request_followed_by_garbage_is_answered_then_400_then_close(start_service, kind: str) -> None:
    """A valid request and garbage in the same send: the client gets the request's whole
    answer, then a JSON 400 for the garbage, then the end of the connection."""
    service = start_service(BASIC)
    make_ready(service)
    with connect(service) as sock:
        sock.sendall(health_or_chat(kind) + GARBAGE)
        reader = Reader(sock)
        assert_first_answer(kind, reader.response())
        bad = reader.response()
        assert bad.status == 400 and bad.error(), bad
        reader.expect_close(" after the 400")


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_connection_close_ends_the_connection_after_the_answer(start_service, kind: str) -> None:
    """A request with `Connection: close` followed by a second request: the client gets the
    first answer whole, then the end of the connection; the second is never answered."""
    service = start_service(BASIC)
    make_ready(service)
    with connect(service) as sock:
        sock.sendall(health_or_chat(kind, headers=[("Connection", "close")]) + chat("alpha"))
        reader = Reader(sock)
        assert_first_answer(kind, reader.response())
        reader.expect_close(" after an answer to `Connection: close`")


def test_a_large_answer_before_a_closing_request_arrives_whole(start_service) -> None:
    """A large answer, then a request that ends the connection, then more bytes the service
    will never read: the client still reads the large answer to its last byte and the
    closing request's answer, then a clean end — not a reset that drops the answer's tail
    (a socket closed with unread input sends a RST; found by the fuzz target)."""
    service = start_service(BASIC)
    make_ready(service)
    body = bytes(40_000)  # echoed as JSON text: an answer of ~200 KB, relayed in pieces
    with connect(service, rcvbuf=4096) as sock:
        sock.sendall(request("POST", "/upstream/alpha/echo?m=1", body,
                             headers=[("Content-Type", "application/octet-stream")])
                     + request("HEAD", "/health", headers=[("Connection", "close")]))
        reader = Reader(sock)
        reader.wait_for(b"HTTP/1.1 200")  # the large answer has begun ...
        sock.sendall(GARBAGE * 1000)  # ... and these bytes will never be read
        echoed = reader.response()
        assert echoed.status == 200 and echoed.json()["body_len"] == len(body), echoed
        assert reader.response(head_request=True).status == 200
        reader.expect_close(" after the answer to `Connection: close`")


# =========================================================================== 4. HTTP/1.0 with chunked framing


def test_http10_chunked_request_is_answered_then_the_connection_closed(start_service) -> None:
    """An HTTP/1.0 POST with `Transfer-Encoding: chunked` and `Connection: keep-alive`, and a
    second request behind it: the first is answered, then the connection ends (its framing
    cannot be trusted, RFC 9112 §6.1); the second never runs — the upstream never sees it."""
    service = start_service(BASIC)
    make_ready(service)
    before = chat_count(service, "alpha")
    first = (b"POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\n"
             b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n" + chunked(chat_body("alpha"), 20))
    with connect(service) as sock:
        sock.sendall(first + chat("alpha"))
        reader = Reader(sock)
        assert_chat_answer(reader.response())
        reader.expect_close(" after an HTTP/1.0 chunked request")
    assert chat_count(service, "alpha") == before + 1, "the request behind the HTTP/1.0 chunked one ran"


# =========================================================================== 5. Host


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_http11_request_without_host_is_400(start_service, kind: str) -> None:
    """HTTP/1.1 requires `Host`: without one, `400 {"error": "...Host..."}`."""
    service = start_service(BASIC)
    make_ready(service)
    with connect(service) as sock:
        sock.sendall(health_or_chat(kind, host=None))
        answer = Reader(sock).response()
    assert answer.status == 400 and "Host" in answer.error(), answer


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_request_with_two_host_headers_is_400(start_service, kind: str) -> None:
    """Two `Host` field lines: `400 {"error": "...Host..."}`."""
    service = start_service(BASIC)
    make_ready(service)
    with connect(service) as sock:
        sock.sendall(health_or_chat(kind, headers=[("Host", "other")]))
        answer = Reader(sock).response()
    assert answer.status == 400 and "Host" in answer.error(), answer


@pytest.mark.parametrize("kind", ["health", "chat"])
def test_http10_request_without_host_is_served(start_service, kind: str) -> None:
    """HTTP/1.0 has no `Host` requirement: answered 200."""
    service = start_service(BASIC)
    make_ready(service)
    with connect(service) as sock:
        sock.sendall(health_or_chat(kind, host=None, version="1.0"))
        assert_first_answer(kind, Reader(sock).response())


# =========================================================================== 6. 100-continue in its turn


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/upstream/alpha/echo"])
def test_100_continue_for_a_pipelined_request_waits_for_its_turn(start_service, target: str) -> None:
    """A slow streamed chat, then on the same connection the head of a POST with
    `Expect: 100-continue` (its body held back): the stream arrives as a well-formed chunked
    body with no interim answer inside; after it ends comes `HTTP/1.1 100 Continue`; the
    client sends the body and gets its 200."""
    service = start_service(BASIC)
    make_ready(service)
    body = chat_body("alpha")
    second = request("POST", target, body, headers=[("Content-Type", "application/json"),
                                                   ("Expect", "100-continue")])
    second_head = second[: -len(body)]
    with connect(service) as sock:
        sock.sendall(chat("alpha", stream=True, n_chunks=10, chunk_delay=0.1))
        reader = Reader(sock)
        reader.wait_for(b"data: ")  # the stream has begun
        sock.sendall(second_head)
        streamed = reader.response()  # a strict chunked parse: a stray `HTTP/1.1 100` inside fails it
        assert streamed.status == 200 and b"HTTP/1.1 100" not in streamed.raw, streamed
        assert_whole_stream(streamed, 10)
        interim = reader.response()
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        sock.sendall(body)
        final = reader.response()
    assert final.status == 200, final
    if target == "/v1/chat/completions":
        assert_chat_answer(final)
    else:
        assert final.json()["body_text"] == body.decode()


# =========================================================================== 7. 1xx from the upstream


HINTED = "healthCheckTimeout: 15\n" + models_yaml(hinted=fake_cmd(name="hinted", early_hints=True))


@pytest.mark.parametrize("state", ["ready", "not-running"])
def test_upstream_103_reaches_an_http11_client_before_the_answer(start_service, state: str) -> None:
    """An upstream that sends `103 Early Hints` (with a `Link` field) before its answer: an
    HTTP/1.1 client gets the 103 with its `Link`, then the 200 (RFC 9110 §15.2) — whether
    the model was ready or had to be started for the request."""
    service = start_service(HINTED)
    if state == "ready":
        make_ready(service, "hinted")
    with connect(service) as sock:
        sock.sendall(chat("hinted"))
        interim, final = Reader(sock).interim_and_final()
    assert [answer.status for answer in interim] == [103], f"interim answers: {interim}, then {final}"
    assert interim[0].header("Link") == "</hint>; rel=preload", interim[0]
    assert_chat_answer(final, "hinted")


@pytest.mark.parametrize("state", ["ready", "not-running"])
def test_http10_client_is_not_sent_a_1xx(start_service, state: str) -> None:
    """The same upstream, an HTTP/1.0 client: no interim answer (HTTP/1.0 has none), just the 200."""
    service = start_service(HINTED)
    if state == "ready":
        make_ready(service, "hinted")
    with connect(service) as sock:
        sock.sendall(chat("hinted", version="1.0"))
        reader = Reader(sock)
        answer = reader.response()
        assert_chat_answer(answer, "hinted")
        reader.expect_close(" after an answer to HTTP/1.0")


# =========================================================================== 8. an upstream that drops the request


DROPPER = "healthCheckTimeout: 15\n" + models_yaml(dropper=fake_cmd(name="dropper", drop_after_read=True))


@pytest.mark.parametrize("state", ["ready", "not-running"])
def test_upstream_dropping_a_request_it_read_gets_502_and_no_replay(start_service, state: str) -> None:
    """An upstream that reads a POST and then closes the connection without answering: the
    client gets `502 {"error": "...dropper..."}`, and the upstream received the POST exactly
    once (a request that reached it is not replayed). An upstream killed while idle is still
    restarted and the request answered: tests/integration/test_endpoints.py covers that."""
    service = start_service(DROPPER)
    pid = None
    if state == "ready":  # started by a GET, which it answers
        assert chat_count(service, "dropper") == 0
        pid = service.pid_of("dropper")
    with connect(service) as sock:
        sock.sendall(chat("dropper"))
        answer = Reader(sock).response()
    assert answer.status == 502 and "dropper" in answer.error(), answer
    stats = upstream_stats(service, "dropper")
    if pid is not None:
        assert service.pid_of("dropper") == pid, "the upstream was restarted"
    assert stats["by_path"].get("/v1/chat/completions", 0) == 1, f"the upstream got the POST: {stats['by_path']}"

    def reads() -> int:  # as the upstreams logged them (their output reaches the service's log a moment later)
        return len(re.findall(r"dropper dropping the connection after reading POST", service.log()))

    assert wait_until(lambda: reads() >= 1, timeout=5) and reads() == 1, f"the POST was read {reads()} times"


# =========================================================================== 9. client timeouts


TIMEOUTS = "clientTimeouts:\n  header: 1\n  body: 1\n  idle: 1\nhealthCheckTimeout: 15\n" + models_yaml(
    alpha=ALPHA, beta=fake_cmd(name="beta", chunks=3))


def fresh_chat(service: RunningService, model: str) -> None:
    """A chat request on a connection of its own (pooled ones may be closed by `idle`)."""
    with httpx.Client(base_url=service.url, timeout=WAIT) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": HI})
    assert response.status_code == 200, response.text


def test_connection_never_used_is_closed_after_idle(start_service) -> None:
    """A client that connects and sends nothing: the connection ends (no answer) after `idle`."""
    service = start_service(TIMEOUTS)
    with connect(service) as sock:
        Reader(sock).expect_close(" that never sent a byte")


def test_partial_head_gets_408_then_close(start_service) -> None:
    """Part of a request head, then nothing: after `clientTimeouts.header`, the client gets
    `408 {"error": "...clientTimeouts.header..."}` and the connection ends."""
    service = start_service(TIMEOUTS)
    with connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: te")
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 408 and "clientTimeouts.header" in answer.error(), answer
        reader.expect_close(" after the 408")


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/upstream/alpha/echo"])
def test_partial_body_gets_408_then_close(start_service, target: str) -> None:
    """A whole head announcing 100 bytes of body, 10 of them, then nothing: after
    `clientTimeouts.body`, `408 {"error": "...clientTimeouts.body..."}` and the end."""
    service = start_service(TIMEOUTS)
    fresh_chat(service, "alpha")
    with connect(service) as sock:
        sock.sendall(request("POST", target, headers=[("Content-Type", "application/json"),
                                                      ("Content-Length", "100")]) + b'{"model":"')
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 408 and "clientTimeouts.body" in answer.error(), answer
        reader.expect_close(" after the 408")


@pytest.mark.parametrize("last", ["chat-ready", "chat-not-running", "health"])
def test_kept_alive_connection_is_closed_after_idle(start_service, last: str) -> None:
    """After an answer on a kept-alive connection — a chat to a ready model, one that had to
    start its model, or `GET /health` — nothing more: the connection ends after `idle`."""
    service = start_service(TIMEOUTS)
    if last == "chat-ready":
        fresh_chat(service, "alpha")
    with connect(service) as sock:
        sock.sendall(request("GET", "/health") if last == "health" else chat("alpha"))
        reader = Reader(sock)
        assert_first_answer("health" if last == "health" else "chat", reader.response())
        reader.expect_close(" kept alive with nothing more to do")


def test_slowloris_connections_are_all_closed_and_memory_returns(start_service) -> None:
    """200 connections each trickling a request head a few bytes at a time (for 2 s, longer
    than `clientTimeouts.header`), then nothing: every one gets a 408 and is closed, and the
    service's RSS afterwards is within 5 MB of idle."""
    service = start_service(TIMEOUTS)
    before = idle_rss(service)
    head = b"GET /health HTTP/1.1\r\nHost: slowloris\r\nUser-Agent: slow\r\nX-Slow: " + b"s" * 200
    socks = []
    for _ in range(200):
        socks.append(connect(service))
        socks[-1].sendall(head[:3])  # each has begun its head (its header clock runs)
    received = {sock: b"" for sock in socks}
    open_ = set(socks)

    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for sock in socks:
        poller.register(sock, select.POLLIN)

    def collect(timeout: float) -> None:
        """Read what has arrived (waiting up to ``timeout``); a connection that ended is done."""
        for fd, _ in poller.poll(max(0.0, timeout) * 1000):
            sock = by_fd[fd]
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            received[sock] += data
            if not data:
                open_.discard(sock)
                poller.unregister(sock)

    try:
        trickle_end = time.monotonic() + 2.0
        next_piece = time.monotonic()
        offset = 3
        while time.monotonic() < trickle_end and open_:
            if time.monotonic() >= next_piece:  # 3 more bytes of the (endless) head every 0.1 s
                for sock in list(open_):
                    try:
                        sock.send(head[offset:offset + 3])
                    except OSError:
                        pass  # closed by the service: its answer is read below
                offset += 3
                next_piece += 0.1
            collect(max(0.0, next_piece - time.monotonic()))  # reads answers while it waits
        deadline = time.monotonic() + WAIT
        while open_ and time.monotonic() < deadline:
            collect(deadline - time.monotonic())
        still_open = len(open_)
        not_408 = [data[:80] for data in received.values() if not data.startswith(b"HTTP/1.1 408 ")]
    finally:
        for sock in socks:
            sock.close()
    assert still_open == 0, f"{still_open} of 200 slow connections still open after {WAIT} s"
    assert not not_408, f"{len(not_408)} slow connections got no 408, e.g. {not_408[:3]}"
    assert_rss_back(service, before, "200 slowloris connections")


# =========================================================================== 11. X-Forwarded-For


ECHOING = "healthCheckTimeout: 15\n" + models_yaml(
    alpha=fake_cmd(name="alpha", chunks=3, echo_headers=True))
FORWARDED = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.9, 192.0.2.1")]


@pytest.mark.parametrize("route", ["inference", "passthrough"])
@pytest.mark.parametrize("state", ["ready", "not-running"])
def test_forwarded_for_lines_are_combined_and_the_peer_appended(start_service, state: str, route: str) -> None:
    """Two `X-Forwarded-For` field lines (`a` then `b, c`): the upstream gets one,
    `a, b, c, 127.0.0.1` — for a model that was ready and one that had to be started, on an
    inference path and through `/upstream/<model>/`."""
    service = start_service(ECHOING)
    if state == "ready":
        make_ready(service)
    if route == "inference":
        raw = chat("alpha", headers=FORWARDED)
    else:
        raw = request("POST", "/upstream/alpha/echo", b"{}", headers=[("Content-Type", "application/json"),
                                                                     *FORWARDED])
    with connect(service) as sock:
        sock.sendall(raw)
        answer = Reader(sock).response()
    assert answer.status == 200, answer
    data = answer.json()
    seen = data["request_headers"] if route == "inference" else data["header_list"]
    forwarded = [value for name, value in seen if name.lower() == "x-forwarded-for"]
    assert forwarded == [f"203.0.113.7, 198.51.100.9, 192.0.2.1, {PEER}"]


@pytest.mark.parametrize("state", ["ready", "not-running"])
def test_client_address_shown_is_the_first_forwarded_address(start_service, state: str) -> None:
    """The in-flight list (`GET /api/inflight`, the UI) shows as the client the first address
    of the combined `X-Forwarded-For`. (Activity rows carry no client address.)"""
    service = start_service(ECHOING)
    if state == "ready":
        make_ready(service)
    with connect(service) as sock:
        sock.sendall(chat("alpha", headers=FORWARDED, stream=True, n_chunks=30, chunk_delay=0.1))
        found: list[dict] = []

        def listed() -> bool:
            found[:] = [r for r in service.http.get("/api/inflight").json()["requests"] if r["model"] == "alpha"]
            return bool(found)

        assert wait_until(listed, timeout=WAIT), "the request never showed in /api/inflight"
        assert [r["client"] for r in found] == ["203.0.113.7"]
        assert_whole_stream(Reader(sock).response(), 30)


# =========================================================================== 12. streams read to the end are 200s


def streamer(linger: float) -> str:
    return "healthCheckTimeout: 15\n" + models_yaml(streamer=fake_cmd(name="streamer", chunks=5, done_linger=linger))


@pytest.mark.parametrize("linger", [0, 0.2], ids=["body-ends-at-once", "body-ends-late"])
def test_streams_read_to_the_end_are_logged_200_not_499(start_service, linger: float) -> None:
    """8 streams read to their end with the `openai` client (which closes at `data: [DONE]`) and
    8 with httpx stopping at `data: [DONE]`, each client closing at once: every activity row
    for them says 200 and `/metrics` counts no 499 for the model — also when the upstream
    ends its chunked body a moment after `[DONE]` (the client has had the whole stream)."""
    service = start_service(streamer(linger))
    make_ready(service, "streamer")
    first_id = service.http.get("/api/metrics/activity", params={"limit": 1}).json()["data"][0]["id"]
    for _ in range(8):
        with service.openai() as client:
            stream = client.chat.completions.create(model="streamer", messages=HI, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            stream.close()
        assert text == "tok0 tok1 tok2 tok3 tok4 "
    for _ in range(8):
        with httpx.Client(base_url=service.url, timeout=WAIT) as client:
            with client.stream("POST", "/v1/chat/completions",
                               json={"model": "streamer", "messages": HI, "stream": True}) as response:
                assert response.status_code == 200
                assert any(line == "data: [DONE]" for line in response.iter_lines())  # stops at [DONE]
    rows: list[dict] = []

    def logged() -> bool:
        page = service.http.get("/api/metrics/activity", params={"limit": 100, "min_id": first_id + 1}).json()
        rows[:] = [row for row in page["data"] if row["model"] == "streamer"]
        return len(rows) >= 16

    assert wait_until(logged, timeout=WAIT), f"only {len(rows)} of 16 streams logged"
    assert sorted(row["resp_status_code"] for row in rows) == [200] * 16, [
        (row["id"], row["resp_status_code"]) for row in rows]
    cancelled = [line for line in service.http.get("/metrics").text.splitlines()
                 if line.startswith("llamaswap_requests_total{") and 'model="streamer"' in line
                 and 'status="499"' in line]
    assert not cancelled, cancelled


# =========================================================================== HTTP versions


@pytest.mark.parametrize("version", ["1.2", "2.0"])
def test_unsupported_http_version_gets_505_then_close(start_service, version: str) -> None:
    """A request line with `HTTP/1.2` or `HTTP/2.0`: `505 {"error": ...}`, then the end."""
    service = start_service(BASIC)
    with connect(service) as sock:
        sock.sendall(request("GET", "/health", version=version))
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 505 and answer.error(), answer
        reader.expect_close(" after the 505")


def test_rawhttp_reader_rejects_an_interim_answer_inside_a_chunked_body() -> None:
    """The strict reader the tests above rely on: a `100 Continue` written into the middle of
    a chunked body is a wire error, not a body."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(WAIT)
        theirs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                       b"HTTP/1.1 100 Continue\r\n\r\n3\r\ndef\r\n0\r\n\r\n")
        with pytest.raises(AssertionError, match="bad chunk-size line"):
            Reader(ours).response()

