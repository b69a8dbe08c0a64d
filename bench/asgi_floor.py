"""A second floor: the thinnest uvicorn (uvloop + httptools) raw-ASGI + aiohttp-client proxy.

No framework, no routing, no metrics, no logs: a hand-written ASGI callable forwards every
request to one upstream through one shared aiohttp.ClientSession (pooled keep-alive,
auto_decompress=False, no total timeout) and streams the answer back (`http.response.start`,
then `http.response.body` chunks with `more_body`). The lifespan protocol opens and closes
the session. Beside bench/bare_proxy.py (aiohttp.web + aiohttp client, the service's own
stack) it shows what the same forwarding costs on the other stack that
../shared/reference/python-stack-notes.md recommends.

Unlike aiohttp.web, uvicorn does not tell a handler that its client left (sends are silently
dropped): a real proxy on this stack must watch `receive()` for `http.disconnect` and close
the upstream response (stack notes, pitfall 4). `--watch-disconnect` adds that watcher (one
task per request) so its cost can be measured; the floor the bench runs is without it.

Run: `python bench/asgi_floor.py --port 8082 --upstream http://127.0.0.1:5800 [--cpu 0]`
(needs uvicorn, httptools and uvloop: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from yarl import URL

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection", b"expect",
     b"host")
)  # fmt: skip
BAD_GATEWAY = [(b"content-type", b"text/plain"), (b"content-length", b"11")]


def make_app(upstream: str, watch_disconnect: bool = False) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A raw ASGI callable forwarding every HTTP request to `upstream` (e.g. http://127.0.0.1:5800)."""
    base = upstream.rstrip("/")
    state: dict[str, aiohttp.ClientSession] = {}

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["session"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4),
                    auto_decompress=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await state["session"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def read_body(receive: Receive) -> bytes:
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body
        parts = [body]
        while message.get("more_body", False):
            message = await receive()
            parts.append(message.get("body", b""))
        return b"".join(parts)

    async def forward(scope: Scope, body: bytes, send: Send) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        url = URL(base + target.decode("latin-1"), encoded=True)
        try:
            upstream = await state["session"].request(scope["method"], url, headers=headers, data=body)
        except aiohttp.ClientError:
            await send({"type": "http.response.start", "status": 502, "headers": BAD_GATEWAY})
            await send({"type": "http.response.body", "body": b"Bad Gateway"})
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status,
                    "headers": [(k, v) for k, v in upstream.raw_headers if k.lower() not in HOP_BY_HOP],
                }
            )
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            upstream.release()

    async def forward_watched(scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """`forward`, cancelled when the client disconnects (uvicorn would drop the sends silently)."""
        work = asyncio.ensure_future(forward(scope, body, send))

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            work.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await work
        finally:
            watcher.cancel()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            body = await read_body(receive)
            if watch_disconnect:
                await forward_watched(scope, body, receive, send)
            else:
                await forward(scope, body, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5800")
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    parser.add_argument("--watch-disconnect", action="store_true", help="cancel the forwarding when the client leaves")
    args = parser.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    import uvicorn

    uvicorn.run(
        make_app(args.upstream, watch_disconnect=args.watch_disconnect),
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
