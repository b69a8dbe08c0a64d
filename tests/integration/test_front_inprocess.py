"""The front (wire/front.py) in-process, with a lane that fails on purpose: what a client sees
when the code serving its request has a bug — never a silently dropped connection."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import pytest

from llama_swap.wire.framing import head, json_answer
from llama_swap.wire.front import Connection, Front, Limits
from llama_swap.wire.incoming import Incoming

LIMITS = Limits(max_head=64 << 10, max_body=1 << 20, header_timeout=30, body_timeout=30, idle_timeout=30)


class FailingLane:
    """Serves every request; `/boom` fails before answering, `/half` after starting to."""

    limits = LIMITS

    def takes(self, request: Incoming) -> bool:
        return True

    async def serve(self, request: Incoming, conn: Connection) -> None:
        if request.target == b"/boom":
            raise RuntimeError("kaboom")
        if request.target == b"/half":
            conn.write(head(200, "", [(b"Content-Length", b"100")]) + b"only part")
            raise RuntimeError("kaboom after the head")
        conn.write(json_answer(200, b'{"ok":true}', connection=request.connection))


def _no_bridge() -> None:
    raise AssertionError("nothing here is for the aiohttp app")


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    front = Front(FailingLane(), _no_bridge)  # type: ignore[arg-type]
    await front.listen("127.0.0.1", 0)
    yield front
    await front.close(0)


async def _exchange(front: Front, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)  # until the front closes
    finally:
        writer.close()


async def test_a_lane_that_fails_before_answering_gives_a_500_and_the_front_goes_on(front: Front) -> None:
    answer = await _exchange(front, b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    status_line, rest = answer.split(b"\r\n", 1)
    assert status_line == b"HTTP/1.1 500 Internal Server Error"
    assert b"Connection: close" in rest
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body == {"error": "internal error: RuntimeError: kaboom"}
    ok = await _exchange(front, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b'{"ok":true}')


async def test_a_lane_that_fails_mid_answer_closes_the_connection(front: Front) -> None:
    answer = await _exchange(front, b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"only part")  # cut short: visibly incomplete
