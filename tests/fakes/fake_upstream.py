#!/usr/bin/env python3
"""A small, real, OpenAI-compatible fake upstream (stand-in for llama-server).

Run as a separate process::

    python tests/fakes/fake_upstream.py --port 5800 --name alpha --chunks 3

It speaks enough of the OpenAI / llama.cpp / Anthropic HTTP APIs for the
proxy's integration tests, and has switches to misbehave on purpose (slow
start, crash at start, never healthy, hanging health, ignoring SIGTERM,
dying mid-stream, error statuses, interim 103 answers, dropping a request
after reading it, ending a stream's body late).  Every response carries the headers
``X-Upstream-Name`` and ``X-Upstream-Pid`` and every JSON object it returns
has ``"upstream": NAME`` so tests can tell which process answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import hashlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

START_MONO = time.monotonic()
START_WALL = int(time.time())

# 1x1 transparent PNG, returned by the image endpoints.
TINY_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
EMBED_DIM = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description="fake OpenAI-compatible upstream for tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="fake", help="identity reported in responses")
    p.add_argument("--model-id", default=None, help="id listed by /v1/models (default: NAME)")
    p.add_argument("--start-delay", type=float, default=0.0, help="sleep before listening")
    p.add_argument("--healthy-after", type=float, default=0.0,
                   help="/health is 503 until this many seconds after process start")
    p.add_argument("--crash-at-start", action="store_true", help="exit without listening")
    p.add_argument("--exit-code", type=int, default=1, help="exit code for --crash-at-start")
    p.add_argument("--never-healthy", action="store_true", help="/health always 503")
    p.add_argument("--hang-health", action="store_true", help="/health never answers")
    p.add_argument("--ignore-sigterm", action="store_true", help="ignore SIGTERM")
    p.add_argument("--chunks", type=int, default=5, help="content chunks per stream")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    p.add_argument("--die-mid-stream", type=int, default=None, metavar="K",
                   help="os._exit(3) after K content chunks of a stream")
    p.add_argument("--error-status", type=int, default=None, metavar="CODE",
                   help="inference (POST) endpoints answer this status")
    p.add_argument("--respond", default="hello", help="content text")
    p.add_argument("--close-after-stream", action="store_true",
                   help="close the connection after each stream, though keep-alive was not refused")
    p.add_argument("--die-before-answer-once", default=None, metavar="MARKER",
                   help="exit at the first inference POST without answering, unless MARKER exists; "
                        "creates MARKER, so the restarted upstream answers")
    p.add_argument("--early-hints", action="store_true",
                   help="inference POSTs first get an interim `103 Early Hints` (with a Link header), "
                        "written on the raw connection, then their normal answer")
    p.add_argument("--drop-after-read", action="store_true",
                   help="inference POSTs are counted in /stats and their body read, then the connection "
                        "is closed without an answer")
    p.add_argument("--done-linger", type=float, default=0.0, metavar="SECONDS",
                   help="a stream's body ends this long after its last event (`data: [DONE]` for chat)")
    p.add_argument("--set-cookie", default=None, metavar="VALUE", help="every answer sets this cookie")
    p.add_argument("--echo-headers", action="store_true",
                   help="non-streamed JSON answers of inference POSTs carry `request_headers`: the "
                        "[name, value] pairs the request arrived with, repeated headers kept apart")
    p.add_argument("--slot-save-path", default=None, metavar="DIR",
                   help="llama-server's slot save/restore: POST /slots/0?action=save|restore, and chat "
                        "timings report cache_n (the tokens a restore brought back, once)")
    p.add_argument("--slot-save-delay", type=float, default=0.0, metavar="SECONDS", help="a save takes this long")
    p.add_argument("--restore-noop", action="store_true",
                   help="a restore reports success but the next request has cache_n 0 (llama.cpp #26676)")
    return p.parse_args(argv)


ARGS: argparse.Namespace
REQUEST: contextvars.ContextVar[Any] = contextvars.ContextVar("request")  # the request being handled
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </hint>; rel=preload\r\n\r\n"
CANCELLED: list[dict[str, Any]] = []  # requests whose handler saw a client disconnect
SLOT = {"tokens": 0, "restored": 0}  # slot 0 under --slot-save-path: what it holds, what a restore put back
SLOT_FILE_BYTES_PER_TOKEN = 100
SLOT_FILE_MAGIC = b"FAKESLOT"
STATS: dict[str, Any] = {"requests": 0, "by_path": {}, "slow_completed": 0, "ws_open": 0, "ws_flood_sent": 0}
RECEIVED: list[dict[str, Any]] = []  # the last inference POSTs: path, headers and JSON body (GET /received)
RECEIVED_KEPT = 50


def log(line: str, err: bool = False) -> None:
    """Print one flushed line; never fail if the pipe is gone."""
    try:
        stream = sys.stderr if err else sys.stdout
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def _exit_now(code: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def _on_term(signum: int, _frame: Any) -> None:
    log(f"fake upstream {ARGS.name} got signal {signum}, exiting")
    _exit_now(0)


def install_signals() -> None:
    """SIGTERM/SIGINT exit promptly with 0, unless SIGTERM is to be ignored.

    A SIGTERM disposition inherited as ignored (e.g. ``trap '' TERM`` in a
    wrapper script) is kept ignored, as a plain program would.
    """
    inherited_ignore = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    if ARGS.ignore_sigterm or inherited_ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        why = "--ignore-sigterm" if ARGS.ignore_sigterm else "inherited"
        log(f"fake upstream {ARGS.name} ignoring SIGTERM ({why})")
    else:
        signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)


# --------------------------------------------------------------------------- helpers


def J(data: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(data, separators=(",", ":")).encode()


def with_upstream(data: dict[str, Any]) -> dict[str, Any]:
    data["upstream"] = ARGS.name
    return data


def approx_tokens(obj: Any) -> int:
    """Deterministic rough token count of a request payload."""
    if obj is None:
        return 1
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return max(1, len(text) // 4)


def timings(prompt_n: int, predicted_n: int, delay: float) -> dict[str, float]:
    """llama.cpp-style timings block."""
    prompt_ms = round(0.5 * prompt_n + 1.0, 3)
    predicted_ms = round(max(predicted_n * delay * 1000.0, predicted_n * 2.0, 1.0), 3)
    return {
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": round(prompt_ms / max(prompt_n, 1), 3),
        "prompt_per_second": round(prompt_n * 1000.0 / prompt_ms, 3),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": round(predicted_ms / max(predicted_n, 1), 3),
        "predicted_per_second": round(predicted_n * 1000.0 / predicted_ms, 3),
    }


def content_text() -> str:
    return f"{ARGS.respond} from {ARGS.name}"


def chunk_text(i: int) -> str:
    return f"tok{i} "


def stream_params(body: dict[str, Any]) -> tuple[int, float]:
    """Chunk count and delay, overridable per request by n_chunks / chunk_delay."""
    n = body.get("n_chunks", ARGS.chunks)
    d = body.get("chunk_delay", ARGS.chunk_delay)
    try:
        n = max(0, int(n))
    except (TypeError, ValueError):
        n = ARGS.chunks
    try:
        d = max(0.0, float(d))
    except (TypeError, ValueError):
        d = ARGS.chunk_delay
    return n, d


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event."""
    payload = data if isinstance(data, str) else J(data).decode()
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def record_cancel(request: Any, how: str) -> None:
    CANCELLED.append({"path": request.path, "how": how, "t": round(time.monotonic() - START_MONO, 3)})
    log(f"{ARGS.name} client went away: {request.method} {request.path} ({how})")


def gen_id(prefix: str) -> str:
    return f"{prefix}{os.getpid()}{int(time.monotonic() * 1e6) % 10**9}"


# --------------------------------------------------------------------------- app


def build_app() -> Any:
    """Create the aiohttp application with all routes."""
    from aiohttp import web

    def jresp(data: Any, status: int = 200) -> web.Response:
        if isinstance(data, dict):
            with_upstream(data)
            request = REQUEST.get(None)
            if ARGS.echo_headers and request is not None and request.method == "POST":
                data["request_headers"] = [[k, v] for k, v in request.headers.items()]
        return web.Response(body=J(data), status=status, content_type="application/json")

    async def read_json(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise web.HTTPBadRequest(
                body=J(with_upstream({"error": {"message": f"invalid JSON: {e}", "type": "invalid_request_error", "code": 400}})),
                content_type="application/json",
            ) from None
        return data if isinstance(data, dict) else {"_": data}

    async def run_stream(
        request: web.Request,
        head: list[bytes],
        chunk: Callable[[int], bytes],
        tail: Callable[[], list[bytes]],
        n: int,
        delay: float,
    ) -> web.StreamResponse:
        """Send head events, n chunk events (delay apart), tail events; flush each."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        die = ARGS.die_mid_stream
        try:
            await resp.prepare(request)
            for ev in head:
                await resp.write(ev)
            for i in range(n):
                if die is not None and i == die:
                    log(f"{ARGS.name} dying mid-stream after {i} chunks")
                    _exit_now(3)
                if delay and i:
                    await asyncio.sleep(delay)
                await resp.write(chunk(i))
            if die is not None and die == n:
                log(f"{ARGS.name} dying mid-stream after {n} chunks")
                _exit_now(3)
            for ev in tail():
                await resp.write(ev)
            if ARGS.done_linger:
                await asyncio.sleep(ARGS.done_linger)
            await resp.write_eof()
            if ARGS.close_after_stream and request.transport is not None:
                # as llama-server does right after a stream (its FIN follows the last chunk by
                # ~40 µs, measured), though it had said keep-alive
                asyncio.get_running_loop().call_soon(request.transport.close)
        except asyncio.CancelledError:
            record_cancel(request, "cancelled")
            raise
        except ConnectionResetError:
            record_cancel(request, "connection reset")
            raise
        return resp

    # ---------------------------------------------------------------- middleware

    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        log(f"{ARGS.name} {request.method} {request.path}")
        REQUEST.set(request)
        if ARGS.die_before_answer_once and request.method == "POST" and not os.path.exists(ARGS.die_before_answer_once):
            open(ARGS.die_before_answer_once, "w").close()
            log(f"{ARGS.name} dying before answering", err=True)
            _exit_now(4)
        STATS["requests"] += 1
        STATS["by_path"][request.path] = STATS["by_path"].get(request.path, 0) + 1
        inference = request.method == "POST" and not request.path.startswith("/echo")
        if inference and request.content_type == "application/json":
            try:
                RECEIVED.append({"path": request.path, "headers": dict(request.headers),
                                 "body": json.loads(await request.read())})
                del RECEIVED[:-RECEIVED_KEPT]
            except ValueError:
                pass
        if ARGS.drop_after_read and inference:
            await request.read()
            log(f"{ARGS.name} dropping the connection after reading {request.method} {request.path}")
            if request.transport is not None:
                request.transport.close()
            await asyncio.Event().wait()  # cancelled when aiohttp sees the connection gone
        if ARGS.early_hints and inference and request.transport is not None:
            request.transport.write(EARLY_HINTS)
        if (
            ARGS.error_status is not None
            and request.method == "POST"
            and not request.path.startswith("/echo")
        ):
            await request.read()
            code = ARGS.error_status
            return jresp({"error": {"message": "fake upstream error", "type": "server_error", "code": code}}, code)
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status in (404, 405):
                return jresp({"error": {"message": f"{e.reason}: {request.method} {request.path}",
                                        "type": "not_found_error", "code": e.status}}, e.status)
            raise

    async def on_prepare(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Upstream-Name"] = ARGS.name
        response.headers["X-Upstream-Pid"] = str(os.getpid())
        if ARGS.set_cookie:
            response.headers["Set-Cookie"] = ARGS.set_cookie

    # ---------------------------------------------------------------- control

    async def hang_health(request: web.Request) -> web.Response:
        """From now on, /health never answers (an upstream that hung while ready)."""
        ARGS.hang_health = True
        return jresp({"hang_health": True})

    async def health(request: web.Request) -> web.StreamResponse:
        if ARGS.hang_health:
            await asyncio.Event().wait()
        if ARGS.never_healthy or time.monotonic() - START_MONO < ARGS.healthy_after:
            return jresp({"status": "loading", "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, 503)
        return jresp({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        mid = ARGS.model_id or ARGS.name
        return jresp({"object": "list", "data": [
            {"id": mid, "object": "model", "created": START_WALL, "owned_by": "fake-upstream",
             "meta": {"n_ctx_train": 4096, "n_params": 1000}}]})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        text: str | None = None
        if len(body) < 64 * 1024:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        raw = request.raw_path
        headers: dict[str, str] = {}
        for k, v in request.headers.items():  # repeated headers are joined with ", "
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        return jresp({
            "method": request.method,
            "path": raw.split("?", 1)[0],
            "decoded_path": request.path,
            "query_string": request.rel_url.raw_query_string,
            "raw_path": raw,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": headers,
            "headers_lower": {k.lower(): v for k, v in headers.items()},
            "header_list": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_text": text,
        })

    async def pid(request: web.Request) -> web.Response:
        return jresp({"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0)})

    async def env(request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        return jresp({"name": name, "value": os.environ.get(name)})

    async def slow(request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", "1"))
        except ValueError:
            seconds = 1.0
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            record_cancel(request, "cancelled")
            raise
        STATS["slow_completed"] += 1
        return jresp({"done": True, "seconds": seconds})

    async def cancelled_count(request: web.Request) -> web.Response:
        return jresp({"count": len(CANCELLED), "cancelled": CANCELLED})

    async def received(request: web.Request) -> web.Response:
        """The inference POSTs with a JSON body received last, oldest first: what the proxy sent."""
        return jresp({"received": RECEIVED})

    async def stats(request: web.Request) -> web.Response:
        return jresp({**STATS, "cancelled": len(CANCELLED), "uptime": round(time.monotonic() - START_MONO, 3)})

    def slot_served(prompt_tokens: int) -> dict[str, int]:
        """A chat under --slot-save-path: slot 0 holds its prompt; cache_n for its timings."""
        if ARGS.slot_save_path is None:
            return {}
        cached, SLOT["restored"] = SLOT["restored"], 0
        SLOT["tokens"] = prompt_tokens
        return {"cache_n": cached}

    async def slot_action(request: web.Request) -> web.Response:
        action, slot = request.query.get("action"), int(request.match_info["slot"])
        filename = (await read_json(request)).get("filename", "")
        if ARGS.slot_save_path is None:
            return jresp({"error": {"code": 501, "message": "This server does not support slots action."}}, 501)
        path = os.path.join(ARGS.slot_save_path, filename)
        if action == "save":
            await asyncio.sleep(ARGS.slot_save_delay)
            tokens = SLOT["tokens"] if slot == 0 else 0
            with open(path, "wb") as f:
                f.write(SLOT_FILE_MAGIC + b"k" * (tokens * SLOT_FILE_BYTES_PER_TOKEN - len(SLOT_FILE_MAGIC)))
            log(f"{ARGS.name} saved slot {slot} to {filename}")
            return jresp({"id_slot": slot, "filename": filename, "n_saved": tokens,
                          "n_written": tokens * SLOT_FILE_BYTES_PER_TOKEN})
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        if not data.startswith(SLOT_FILE_MAGIC):
            return jresp({"error": {"code": 400, "message": "Unable to restore slot: invalid slot save file"}}, 400)
        size = len(data)
        tokens = size // SLOT_FILE_BYTES_PER_TOKEN
        SLOT["tokens"], SLOT["restored"] = tokens, 0 if ARGS.restore_noop else tokens
        log(f"{ARGS.name} restored slot {slot} from {filename}")
        return jresp({"id_slot": slot, "filename": filename, "n_restored": tokens, "n_read": size})

    async def slots(request: web.Request) -> web.Response:
        if ARGS.slot_save_path is not None:
            return jresp([{"id": 0, "n_ctx": 4096, "is_processing": False, "n_prompt_tokens": SLOT["tokens"]}])
        data = [{
            "id": i, "id_task": -1, "n_ctx": 4096, "speculative": False, "is_processing": False,
            "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
            "prompt": "", "next_token": {"has_next_token": True, "n_remain": -1, "n_decoded": 0},
            "upstream": ARGS.name,
        } for i in range(2)]
        return jresp(data)

    async def props(request: web.Request) -> web.Response:
        return jresp({
            "default_generation_settings": {"n_ctx": 4096, "params": {"temperature": 0.8, "top_k": 40}},
            "total_slots": 2,
            "model_path": f"/models/{ARGS.name}.gguf",
            "chat_template": "{{ messages }}",
            "modalities": {"vision": False, "audio": False},
            "build_info": "fake-upstream",
        })

    # ---------------------------------------------------------------- websocket

    async def websocket(request: web.Request) -> web.StreamResponse:
        """An echo websocket (text and binary frames back as they came), with commands sent
        as text frames: `close` (a normal close from this side), `drop` (the TCP connection
        closed without a close frame), `headers` (the upgrade request's headers as JSON),
        `flood N` (N binary frames of 1 MiB, as fast as the connection takes them; the bytes
        sent so far are in /stats as `ws_flood_sent`), `stall N` (nothing read for N seconds).
        `?reject=CODE` refuses the upgrade."""
        if "reject" in request.query:
            code = int(request.query["reject"])
            return jresp({"error": {"message": "upgrade refused", "type": "invalid_request_error", "code": code}},
                         code)
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        STATS["ws_open"] += 1
        log(f"{ARGS.name} websocket open")
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                    continue
                if msg.type != web.WSMsgType.TEXT:
                    break
                text = msg.data
                if text == "close":
                    await ws.close(code=1000, message=b"closed by the upstream")
                elif text == "drop":
                    assert request.transport is not None
                    request.transport.close()
                elif text == "headers":
                    await ws.send_str(json.dumps(dict(request.headers)))
                elif text.startswith("stall "):
                    await asyncio.sleep(float(text.split()[1]))
                elif text.startswith("flood "):
                    frame = b"\xab" * (1 << 20)
                    for _ in range(int(text.split()[1])):
                        await ws.send_bytes(frame)
                        STATS["ws_flood_sent"] += len(frame)
                else:
                    await ws.send_str(text)
        finally:
            STATS["ws_open"] -= 1
            log(f"{ARGS.name} websocket closed")
        return ws

    # ---------------------------------------------------------------- OpenAI inference

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        n, delay = stream_params(body)
        pt = approx_tokens(body.get("messages"))
        cid = gen_id("chatcmpl-")
        created = int(time.time())
        cache = slot_served(pt)
        if not body.get("stream"):
            ct = n if n else 1
            return jresp({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content_text()}}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                "timings": {**timings(pt, ct, delay), **cache},
            })

        def ck(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return sse(with_upstream({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}))

        def tail() -> list[bytes]:
            out = [ck({}, "stop", timings={**timings(pt, n, delay), **cache})]
            if (body.get("stream_options") or {}).get("include_usage"):
                out.append(sse(with_upstream({
                    "id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                    "usage": {"prompt_tokens": pt, "completion_tokens": n, "total_tokens": pt + n},
                    "timings": timings(pt, n, delay)})))
            out.append(sse("[DONE]"))
            return out

        return await run_stream(request, [ck({"role": "assistant", "content": ""})],
                                lambda i: ck({"content": chunk_text(i)}), tail, n, delay)

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        n, delay = stream_params(body)
        pt = approx_tokens(body.get("prompt"))
        cid = gen_id("cmpl-")
        created = int(time.time())

        def obj(text: str, finish: str | None, **extra: Any) -> dict[str, Any]:
            return with_upstream({"id": cid, "object": "text_completion", "created": created, "model": model,
                                  "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                                  **extra})

        if not body.get("stream"):
            ct = n if n else 1
            return jresp(obj(content_text(), "stop",
                             usage={"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                             timings=timings(pt, ct, delay)))

        def tail() -> list[bytes]:
            out = [sse(obj("", "stop", timings=timings(pt, n, delay)))]
            if (body.get("stream_options") or {}).get("include_usage"):
                out.append(sse(with_upstream({
                    "id": cid, "object": "text_completion", "created": created, "model": model, "choices": [],
                    "usage": {"prompt_tokens": pt, "completion_tokens": n, "total_tokens": pt + n}})))
            out.append(sse("[DONE]"))
            return out

        return await run_stream(request, [], lambda i: sse(obj(chunk_text(i), None)), tail, n, delay)

    async def native_completion(request: web.Request) -> web.StreamResponse:
        """llama.cpp /completion and /infill."""
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        n, delay = stream_params(body)
        pt = approx_tokens(body.get("prompt") or body.get("input_extra"))
        if not body.get("stream"):
            ct = n if n else 1
            return jresp({"content": content_text(), "model": model, "stop": True, "stop_type": "eos",
                          "tokens_predicted": ct, "tokens_evaluated": pt, "timings": timings(pt, ct, delay)})

        def tail() -> list[bytes]:
            return [sse(with_upstream({"content": "", "stop": True, "model": model, "stop_type": "eos",
                                       "tokens_predicted": n, "tokens_evaluated": pt,
                                       "timings": timings(pt, n, delay)}))]

        return await run_stream(
            request, [], lambda i: sse(with_upstream({"content": chunk_text(i), "stop": False})), tail, n, delay)

    async def embeddings(request: web.Request) -> web.Response:
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        inp = body.get("input", body.get("content", ""))
        # A list of ints is a single tokenized input; otherwise a list is many inputs.
        if isinstance(inp, list) and inp and not all(isinstance(x, int) for x in inp):
            inputs = inp
        else:
            inputs = [inp]
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            digest = hashlib.sha256(J(item)).digest()
            vec = [round(b / 255.0 - 0.5, 4) for b in digest[:EMBED_DIM]]
            emb: Any = base64.b64encode(struct.pack(f"<{EMBED_DIM}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        pt = sum(approx_tokens(x) for x in inputs)
        return jresp({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": pt, "total_tokens": pt}})

    async def rerank(request: web.Request) -> web.Response:
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        query = str(body.get("query", ""))
        docs = body.get("documents") or []
        results = []
        for i, d in enumerate(docs):
            text = d if isinstance(d, str) else json.dumps(d, sort_keys=True)
            h = hashlib.sha256((query + "\0" + text).encode()).digest()
            results.append({"index": i, "relevance_score": round(int.from_bytes(h[:4], "big") / 2**32, 6)})
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n >= 0:
            results = results[:top_n]
        pt = approx_tokens(query) + sum(approx_tokens(d) for d in docs)
        return jresp({"object": "list", "model": model, "results": results,
                      "usage": {"prompt_tokens": pt, "total_tokens": pt}})

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        n, delay = stream_params(body)
        pt = approx_tokens(body.get("input"))
        rid, mid = gen_id("resp_"), gen_id("msg_")
        created = int(time.time())

        def resp_obj(status: str, text: str | None, ct: int) -> dict[str, Any]:
            output = [] if text is None else [{
                "type": "message", "id": mid, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}]
            return with_upstream({
                "id": rid, "object": "response", "created_at": created, "status": status, "model": model,
                "output": output, "error": None, "incomplete_details": None, "instructions": None,
                "metadata": {}, "parallel_tool_calls": False, "temperature": 1.0, "top_p": 1.0,
                "tool_choice": "auto", "tools": [],
                "usage": None if text is None else {
                    "input_tokens": pt, "output_tokens": ct, "total_tokens": pt + ct,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0}},
            })

        if not body.get("stream"):
            return jresp(resp_obj("completed", content_text(), n if n else 1))

        seq = iter(range(10**9))

        def ev(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        full = "".join(chunk_text(i) for i in range(n))
        item_base = {"type": "message", "id": mid, "role": "assistant"}
        head = [
            ev("response.created", response=resp_obj("in_progress", None, 0)),
            ev("response.output_item.added", output_index=0, item={**item_base, "status": "in_progress", "content": []}),
            ev("response.content_part.added", item_id=mid, output_index=0, content_index=0,
               part={"type": "output_text", "text": "", "annotations": []}),
        ]

        def tail() -> list[bytes]:
            part = {"type": "output_text", "text": full, "annotations": []}
            return [
                ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=full),
                ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part),
                ev("response.output_item.done", output_index=0, item={**item_base, "status": "completed", "content": [part]}),
                ev("response.completed", response=resp_obj("completed", full, n)),
            ]

        return await run_stream(
            request, head,
            lambda i: ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=chunk_text(i)),
            tail, n, delay)

    async def messages(request: web.Request) -> web.StreamResponse:
        """Anthropic Messages API."""
        body = await read_json(request)
        model = body.get("model") or ARGS.name
        n, delay = stream_params(body)
        pt = approx_tokens(body.get("messages"))
        mid = gen_id("msg_")
        if not body.get("stream"):
            ct = n if n else 1
            return jresp({"id": mid, "type": "message", "role": "assistant", "model": model,
                          "content": [{"type": "text", "text": content_text()}],
                          "stop_reason": "end_turn", "stop_sequence": None,
                          "usage": {"input_tokens": pt, "output_tokens": ct}})
        head = [
            sse(with_upstream({"type": "message_start", "message": {
                "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": pt, "output_tokens": 0}}}),
                event="message_start"),
            sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                event="content_block_start"),
        ]

        def tail() -> list[bytes]:
            return [
                sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
                sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                     "usage": {"output_tokens": n}}, event="message_delta"),
                sse({"type": "message_stop"}, event="message_stop"),
            ]

        return await run_stream(
            request, head,
            lambda i: sse({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": chunk_text(i)}}, event="content_block_delta"),
            tail, n, delay)

    async def speech(request: web.Request) -> web.Response:
        body = await read_json(request)
        text = str(body.get("input", ""))
        audio = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * (16 + len(text))
        return web.Response(body=audio, content_type="audio/mpeg")

    async def read_multipart(request: web.Request) -> tuple[dict[str, str], int, str | None]:
        """Return (text fields, total file bytes, first filename)."""
        if not request.content_type.startswith("multipart/"):
            raise web.HTTPBadRequest(
                body=J(with_upstream({"error": {"message": "expected multipart/form-data",
                                                "type": "invalid_request_error", "code": 400}})),
                content_type="application/json")
        fields: dict[str, str] = {}
        size, filename = 0, None
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:  # type: ignore[union-attr]
                filename = filename or part.filename  # type: ignore[union-attr]
                while chunk := await part.read_chunk():  # type: ignore[union-attr]
                    size += len(chunk)
            else:
                fields[part.name or ""] = (await part.read()).decode("utf-8", "replace")  # type: ignore[union-attr]
        return fields, size, filename

    async def transcriptions(request: web.Request) -> web.Response:
        fields, size, filename = await read_multipart(request)
        return jresp({"text": f"transcribed {size} bytes", "model": fields.get("model"),
                      "filename": filename, "fields": fields})

    async def images_generations(request: web.Request) -> web.Response:
        body = await read_json(request)
        count = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
        return jresp({"created": int(time.time()), "model": body.get("model") or ARGS.name,
                      "data": [{"b64_json": TINY_PNG_B64, "revised_prompt": body.get("prompt")}
                               for _ in range(max(1, count))]})

    async def images_edits(request: web.Request) -> web.Response:
        fields, size, _ = await read_multipart(request)
        return jresp({"created": int(time.time()), "model": fields.get("model"), "image_bytes": size,
                      "data": [{"b64_json": TINY_PNG_B64, "revised_prompt": fields.get("prompt")}]})

    app = web.Application(middlewares=[mw], client_max_size=64 * 1024 * 1024)
    app.on_response_prepare.append(on_prepare)
    r = app.router
    r.add_get("/health", health)
    r.add_post("/control/hang-health", hang_health)
    r.add_get("/v1/models", models)
    r.add_get("/models", models)
    r.add_route("*", "/echo", echo)
    r.add_route("*", "/echo/{tail:.*}", echo)
    r.add_get("/pid", pid)
    r.add_get("/env", env)
    r.add_get("/slow", slow)
    r.add_get("/cancelled-count", cancelled_count)
    r.add_get("/stats", stats)
    r.add_get("/received", received)
    r.add_get("/slots", slots)
    r.add_post("/slots/{slot}", slot_action)
    r.add_get("/props", props)
    r.add_get("/ws", websocket)
    r.add_post("/v1/chat/completions", chat)
    r.add_post("/chat/completions", chat)
    r.add_post("/v1/completions", completions)
    r.add_post("/completion", native_completion)
    r.add_post("/completions", native_completion)
    r.add_post("/infill", native_completion)
    r.add_post("/v1/embeddings", embeddings)
    r.add_post("/embeddings", embeddings)
    for path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking"):
        r.add_post(path, rerank)
    r.add_post("/v1/responses", responses)
    r.add_post("/v1/messages", messages)
    r.add_post("/v1/audio/speech", speech)
    r.add_post("/v1/audio/transcriptions", transcriptions)
    r.add_post("/v1/audio/translations", transcriptions)
    r.add_post("/v1/images/generations", images_generations)
    r.add_post("/v1/images/edits", images_edits)
    return app


async def serve() -> None:
    """Listen and serve forever (until a signal ends the process)."""
    from aiohttp import web

    runner = web.AppRunner(build_app(), handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, ARGS.host, ARGS.port)
    await site.start()
    log(f"fake upstream {ARGS.name} listening on {ARGS.host}:{ARGS.port} pid={os.getpid()}")
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    global ARGS
    ARGS = parse_args(argv)
    install_signals()
    if ARGS.start_delay > 0:
        log(f"fake upstream {ARGS.name} starting in {ARGS.start_delay}s pid={os.getpid()}")
        time.sleep(ARGS.start_delay)
    if ARGS.crash_at_start:
        log(f"fake upstream {ARGS.name} pid={os.getpid()} loading model", err=True)
        log("error: simulated failure to load model weights", err=True)
        log("fatal: simulated crash at start", err=True)
        _exit_now(ARGS.exit_code)
    try:
        asyncio.run(serve())
    except OSError as e:
        log(f"fatal: cannot listen on {ARGS.host}:{ARGS.port}: {e}", err=True)
        _exit_now(98)


if __name__ == "__main__":
    main()
