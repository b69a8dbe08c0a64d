"""`address`: a `proxy` URL and a model's or peer's `timeouts` as the pooled client reads them."""

from __future__ import annotations

from llama_swap.config import load_config_text
from llama_swap.routing.names import Names
from llama_swap.wire.upstream import IDLE_SECONDS, address


def upstream_of(timeouts: str):  # type: ignore[no-untyped-def]
    config = load_config_text(f"models:\n  m:\n    cmd: srv --port ${{PORT}}\n    timeouts: {timeouts}\n")
    t = config.models["m"].timeouts
    return address(config.models["m"].proxy, connect=t.connect, tls_handshake=t.tls_handshake,
                   response_header=t.response_header, keepalive=t.keepalive, idle_conn=t.idle_conn)


def test_idle_connections_are_kept_as_idle_conn_says() -> None:
    assert upstream_of("{}").idle == IDLE_SECONDS  # unset: below llama-server's own 5 s
    assert upstream_of("{idleConn: 30}").idle == 30
    assert upstream_of("{idleConn: 0}").idle is None  # 0: no limit, as Go's IdleConnTimeout
    peer = load_config_text("peers:\n  p:\n    proxy: https://example.org\n    models: [x]\n")
    assert Names(peer).peer_model("p/x").route.upstream.idle == 90  # type: ignore[union-attr]


def test_the_other_timeouts() -> None:
    upstream = upstream_of("{connect: 3, tlsHandshake: 4, responseHeader: 5, keepalive: 6}")
    assert (upstream.connect_timeout, upstream.tls_timeout, upstream.response_timeout, upstream.keepalive) == (
        3, 4, 5, 6)
    assert upstream_of("{connect: 0, responseHeader: 0}")[5:7] == (None, 10)
