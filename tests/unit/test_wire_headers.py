"""Header rules on raw byte pairs (wire/headers.py): what an upstream is sent, what a client
is sent back, and which heads are invalid — one set of rules for every request."""

from __future__ import annotations

import pytest

from llama_swap.wire.framing import head
from llama_swap.wire.headers import (
    REQUEST_DROP,
    RawHeaders,
    connection_tokens,
    forwarded_for,
    host_problem,
    request_head,
    response_drop,
)


def _fields(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


def _sent(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode().split("\r\n")
    assert lines[-2:] == ["", ""]
    return [tuple(line.split(": ", 1)) for line in lines[1:-2]]  # type: ignore[misc]


def test_the_upstream_gets_end_to_end_fields_its_own_host_and_the_body_length() -> None:
    raw = _fields(("Host", "client.example"), ("Content-Type", "application/json"), ("Connection", "keep-alive, X-Hop"),
                  ("X-Hop", "secret"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Expect", "100-continue"),
                  ("Transfer-Encoding", "chunked"), ("Content-Length", "99"), ("Upgrade", "websocket"),
                  ("Accept", "text/event-stream"))
    head = request_head(b"POST", b"/v1/chat/completions?x=1", raw, host=b"127.0.0.1:5800", drop=REQUEST_DROP,
                        peer="10.0.0.7", length=12)
    assert head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert _sent(head) == [("Host", "127.0.0.1:5800"), ("Content-Type", "application/json"),
                           ("Accept", "text/event-stream"), ("X-Forwarded-For", "10.0.0.7"), ("Content-Length", "12")]


def test_repeated_forwarded_for_lines_are_one_list_extended_by_the_peer() -> None:
    raw = _fields(("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2, 3.3.3.3"), ("X-Forwarded-For", " "))
    assert forwarded_for(raw) == b"1.1.1.1, 2.2.2.2, 3.3.3.3"
    head = request_head(b"GET", b"/props", raw, host=b"h", drop=REQUEST_DROP, peer="127.0.0.1", length=None)
    assert _sent(head) == [("Host", "h"), ("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1")]
    assert RawHeaders(raw).get("X-Forwarded-For") == "1.1.1.1"  # the client a proxy in front reports


def test_a_request_without_body_gets_no_content_length() -> None:
    head = request_head(b"GET", b"/slots", [], host=b"h", drop=REQUEST_DROP, peer=None, length=None)
    assert head == b"GET /slots HTTP/1.1\r\nHost: h\r\n\r\n"


def test_fields_that_carried_the_key_can_be_dropped() -> None:
    raw = _fields(("Authorization", "Bearer k"), ("x-api-key", "k"), ("Cookie", "a=b"))
    head = request_head(b"POST", b"/", raw, host=b"h", drop=REQUEST_DROP | {b"authorization", b"x-api-key"},
                        peer=None, length=0)
    assert _sent(head) == [("Host", "h"), ("Cookie", "a=b"), ("Content-Length", "0")]


def test_answers_lose_hop_by_hop_fields_and_those_connection_names() -> None:
    raw = _fields(("Content-Type", "text/event-stream"), ("Connection", "close, X-Private"), ("X-Private", "1"),
                  ("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=5"), ("Content-Length", "10"))
    answer = head(200, "", raw, drop=response_drop(raw), connection=None)
    assert answer == b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\n"
    assert connection_tokens(raw) == {b"close", b"x-private"}


@pytest.mark.parametrize(("hosts", "version", "problem"), [
    (1, "1.1", None),
    (0, "1.0", None),
    (1, "1.0", None),
    (0, "1.1", "an HTTP/1.1 request must have a Host header"),
    (2, "1.1", "more than one Host header"),
    (2, "1.0", "more than one Host header"),
])
def test_host_rules_of_rfc_9112(hosts: int, version: str, problem: str | None) -> None:
    assert host_problem(hosts, version) == problem
