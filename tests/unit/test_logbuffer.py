"""Log histories: byte-bounded ring, non-blocking subscribers, drop notices, logToStdout wiring."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from llama_swap.config import load_config_text
from llama_swap.observe.logbuffer import LogBuffer, LogHub, drop_notice
from llama_swap.observe.logs import attach_history, detach_history


def test_history_keeps_the_last_limit_bytes() -> None:
    buffer = LogBuffer(limit=10)
    buffer.write(b"abcdef")
    assert buffer.history() == b"abcdef"
    buffer.write(b"ghijkl")  # wraps: 12 bytes written, last 10 kept
    assert buffer.history() == b"cdefghijkl"
    buffer.write("mn")
    assert buffer.history() == b"efghijklmn"
    buffer.write(b"0123456789ABC")  # bigger than the bound on its own
    assert buffer.history() == b"3456789ABC"
    assert len(buffer.history()) == 10


def test_default_bound_is_100_kib() -> None:
    buffer = LogBuffer()
    for _ in range(3000):
        buffer.write(b"x" * 99 + b"\n")
    assert len(buffer.history()) == 100 * 1024


async def test_subscriber_gets_history_then_live() -> None:
    buffer = LogBuffer()
    buffer.write(b"old\n")
    history, sub = buffer.subscribe()
    assert history == b"old\n"
    buffer.write(b"new\n")
    assert await sub.get(timeout=1) == b"new\n"
    sub.unsubscribe()
    assert buffer.subscriber_count == 0


async def test_slow_subscriber_drops_and_is_told_how_much() -> None:
    buffer = LogBuffer(queue_entries=4)
    _, sub = buffer.subscribe()
    for i in range(10):
        buffer.write(f"line{i}\n".encode())  # 6 bytes each; 4 queued, 6 dropped
    got = [await sub.get(timeout=1) for _ in range(5)]
    assert got[:4] == [b"line0\n", b"line1\n", b"line2\n", b"line3\n"]
    assert got[4] == drop_notice(36)
    assert "— 36 bytes dropped —" in got[4].decode()
    buffer.write(b"after\n")
    assert await sub.get(timeout=1) == b"after\n"


async def test_drop_notice_precedes_the_next_line_when_reader_catches_up() -> None:
    buffer = LogBuffer(queue_entries=1)
    _, sub = buffer.subscribe()
    buffer.write(b"a")
    buffer.write(b"bb")  # dropped
    assert await sub.get(timeout=1) == b"a"
    buffer.write(b"c")
    assert await sub.get(timeout=1) == drop_notice(2)
    assert await sub.get(timeout=1) == b"c"


async def test_writer_never_blocks_on_a_stalled_subscriber() -> None:
    buffer = LogBuffer()
    _, stalled = buffer.subscribe()  # never read
    started = time.monotonic()
    for _ in range(100_000):
        buffer.write(b"y" * 100)
    assert time.monotonic() - started < 5
    assert stalled.dropped > 0
    assert len(buffer.history()) == 100 * 1024


async def test_close_ends_waiting_readers() -> None:
    buffer = LogBuffer()
    _, sub = buffer.subscribe()
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    buffer.close_subscribers()
    assert await asyncio.wait_for(reader, 1) is None


async def test_write_from_another_thread_wakes_the_reader() -> None:
    buffer = LogBuffer()
    _, sub = buffer.subscribe()
    threading.Timer(0.05, buffer.write, args=(b"from thread\n",)).start()
    assert await sub.get(timeout=2) == b"from thread\n"


@pytest.mark.parametrize(
    ("to_stdout", "proxy_in_combined", "upstream_in_combined"),
    [("proxy", True, False), ("upstream", False, True), ("both", True, True), ("none", False, False)],
)
def test_hub_combined_follows_log_to_stdout(to_stdout: str, proxy_in_combined: bool, upstream_in_combined: bool) -> None:
    hub = LogHub(to_stdout)
    hub.write_proxy("proxy line\n")
    hub.model("m1").write("upstream line\n")
    combined = hub.combined.history().decode()
    assert ("proxy line" in combined) is proxy_in_combined
    assert ("upstream line" in combined) is upstream_in_combined
    # the proxy and upstream histories always keep their own lines
    assert hub.proxy.history() == b"proxy line\n"
    assert hub.upstream.history() == b"upstream line\n"
    assert hub.model("m1").history() == b"upstream line\n"
    assert hub.model("m2").history() == b""


def test_history_handler_records_proxy_lines_formatted(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_text("logToStdout: proxy\nmodels:\n  m:\n    cmd: x --port ${PORT}\n")
    hub = LogHub(config.log_to_stdout)
    handler = attach_history(hub, config)
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)
    try:
        logging.getLogger("llama_swap.test").warning("hello %s", "there")
        logging.getLogger("llama_swap.upstream").info("[m] not from logging")
    finally:
        detach_history(handler)
    assert hub.proxy.history() == b"[WARN] hello there\n"
    assert hub.combined.history() == b"[WARN] hello there\n"
    assert hub.upstream.history() == b""
