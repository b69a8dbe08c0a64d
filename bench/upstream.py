"""The bench's own upstream: a minimal OpenAI-like HTTP/1.1 keep-alive server on raw asyncio.

- `GET /health` → 200 `{"status":"ok"}`.
- `POST <any path>` → a small chat-completion JSON, or, when the body has `"stream": true`,
  an SSE stream (chunked) of `max_tokens` small `chat.completion.chunk` events (default
  `--chunks`) followed by `data: [DONE]`. Each event carries `"t"`: the upstream's
  `time.monotonic_ns()` when it was written (CLOCK_MONOTONIC is system-wide on Linux, so a
  client on the same machine can compute each event's one-way delay). `bench_interval_us`
  in the body (default `--interval-us`) paces the events; 0 writes them back to back.
- No per-request logging, no framework: it must stay far cheaper than the proxy under test.

Run: `python bench/upstream.py --port 5800 [--cpu 1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

CHAT_BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
CHAT_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(CHAT_BODY) + CHAT_BODY
)
HEALTH_BODY = b'{"status":"ok"}'
HEALTH_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(HEALTH_BODY) + HEALTH_BODY
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
EVENT_PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}],"t":'
)
DONE_EVENT = b"data: [DONE]\n\n"


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 if absent)."""
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end if end >= 0 else None].strip())


class Connection(asyncio.Protocol):
    """One client connection: requests are answered in order, a stream holds later ones back."""

    def __init__(self, default_chunks: int, default_interval_us: int) -> None:
        self.default_chunks = default_chunks
        self.default_interval_us = default_interval_us
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.streaming is None:
            self._serve()

    def _serve(self) -> None:
        """Answer every complete request in the buffer (until a stream starts)."""
        transport = self.transport
        while transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            try:
                total = end + 4 + _content_length(head)
            except ValueError:
                transport.write(BAD_REQUEST)
                transport.close()
                return
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            if method == b"GET" and path.startswith(b"/health"):
                transport.write(HEALTH_RESPONSE)
            elif method == b"POST":
                request = _stream_request(body)
                if request is None:
                    transport.write(CHAT_RESPONSE)
                else:
                    chunks, interval_us = request
                    self.streaming = asyncio.get_running_loop().create_task(
                        self._stream(
                            self.default_chunks if chunks is None else chunks,
                            self.default_interval_us if interval_us is None else interval_us,
                        )
                    )
                    return
            else:
                transport.write(NOT_FOUND)

    async def _stream(self, chunks: int, interval_us: int) -> None:
        """Write `chunks` SSE events, then [DONE]; then serve what queued up meanwhile."""
        transport = self.transport
        assert transport is not None
        interval = interval_us / 1e6
        try:
            transport.write(STREAM_HEAD)
            for index in range(chunks):
                if index and interval:
                    await asyncio.sleep(interval)
                elif index % 64 == 63:
                    await asyncio.sleep(0)
                if transport.is_closing():
                    return
                transport.write(_chunk(EVENT_PREFIX + b"%d}\n\n" % time.monotonic_ns()))
            transport.write(_chunk(DONE_EVENT) + b"0\r\n\r\n")
        finally:
            self.streaming = None
        if self.buffer:
            self._serve()


def _stream_request(body: bytes) -> tuple[int | None, int | None] | None:
    """(events, interval µs) when the body asks for a stream, else None."""
    if b'"stream"' not in body:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    chunks = request.get("max_tokens")
    interval = request.get("bench_interval_us")
    return (
        chunks if isinstance(chunks, int) and chunks >= 0 else None,
        interval if isinstance(interval, int) and interval >= 0 else None,
    )


async def serve(host: str, port: int, chunks: int, interval_us: int) -> None:
    """Listen until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(chunks, interval_us), host, port, reuse_address=True, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=1000, help="SSE events per stream unless max_tokens says")
    parser.add_argument("--interval-us", type=int, default=0, help="pause between SSE events unless the body says")
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    args = parser.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    try:
        run(serve(args.host, args.port, args.chunks, args.interval_us))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
