"""The soak test (`bench/soak`) in its short form: 40 s, 32 clients, upstreams killed every 1.5–4 s.

The real service as a subprocess on loopback with three fake upstreams in one swap group;
everything it started is stopped by pid and checked to be gone (see `bench/soak.py`).
Requests whose upstream is killed under them may fail, but only clearly (an HTTP error with a
JSON body, or an SSE error event); a crossed, truncated, hung or lost answer, fd or RSS growth
or a surviving process fails the test.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench import soak


@pytest.mark.timeout(240)
def test_soak_short(tmp_path: Path) -> None:
    options = soak.Options(
        seconds=40,
        clients=32,
        kill_every=(1.5, 4.0),
        timeout=30,
        out=tmp_path / "soak.json",
        workdir=tmp_path,
        progress=False,
    )
    result = soak.run(options)
    soak.print_summary(result)  # shown by pytest when the test fails
    requests = result["requests"]
    assert result["violation_count"] == 0, (result["problems"], result["violations"][:5])
    assert requests["started"] == requests["answered"] > 0
    assert requests["ok"] >= 100, requests  # traffic really flowed, across every model
    assert all(counts.get("ok", 0) > 0 for counts in requests["by_model"].values()), requests["by_model"]
    assert result["kills"]["count"] >= 5, result["kills"]
    assert result["checks"]["survivors"] == {}


# --------------------------------------------------------------------------- the checker itself

NAMES = {"alpha": "alpha-x", "beta": "beta-x"}
PID = 4242


def _chunk(content: str, name: str = "alpha-x", **extra: object) -> bytes:
    data = {"upstream": name, "model": "alpha", "choices": [{"delta": {"content": content}, **extra}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def _answers(request: web.Request) -> web.StreamResponse:
    """One bad (or good) answer per path, as a broken service might give it."""
    body = await request.json()
    prompt_tokens = max(1, len(json.dumps(body["messages"], sort_keys=True)) // 4)
    kind = request.match_info["kind"]
    name = "beta-x" if kind == "crossed" else "alpha-x"
    headers = {"X-Upstream-Name": name, "X-Upstream-Pid": str(PID)}
    completion = 2 if kind != "other-request" else 3
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion}
    if kind in ("ok", "crossed", "other-request"):
        return web.json_response({
            "id": f"chatcmpl-{PID}1", "upstream": name, "model": "alpha", "usage": usage,
            "choices": [{"message": {"content": f"hello from {name}"}}],
        }, headers=headers)  # fmt: skip
    if kind == "error-json":
        return web.json_response({"error": "model failed"}, status=503)
    if kind == "error-text":
        return web.Response(text="Bad Gateway", status=502)
    if kind == "hang":
        await asyncio.sleep(10)
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk("tok0 "))
    if kind == "stream-broken":
        request.transport.close()  # type: ignore[union-attr]
        return response
    if kind == "stream-error":
        await response.write(b'data: {"error": {"message": "upstream died", "code": 502}}\n\n')
    elif kind in ("stream-ok", "stream-crossed-chunk"):
        await response.write(_chunk("tok1 ", "beta-x" if kind == "stream-crossed-chunk" else "alpha-x"))
        await response.write(_chunk("", finish_reason="stop"))
        await response.write(b"data: " + json.dumps({"upstream": "alpha-x", "model": "alpha", "choices": [],
                                                     "usage": usage}).encode() + b"\n\n")  # fmt: skip
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()  # stream-truncated: ends without [DONE] or an error
    return response


@pytest.mark.timeout(60)
async def test_the_checker_tells_clear_errors_from_violations(unused_tcp_port: int) -> None:
    """Each kind of outcome the soak counts is recognised (so a PASS means something)."""
    app = web.Application()
    app.router.add_post("/{kind}", _answers)
    runner = web.AppRunner(app, handler_cancellation=True)  # the hung answer ends with its client
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    run = soak.Run(soak.Options(timeout=1.0, out=None), NAMES)
    expected = {
        ("ok", False): "ok", ("crossed", False): "crossed", ("other-request", False): "crossed",
        ("error-json", False): "http_error", ("error-text", False): "unclear_error", ("hang", False): "hang",
        ("stream-ok", True): "ok", ("stream-error", True): "stream_error", ("stream-truncated", True): "truncated",
        ("stream-broken", True): "broken", ("stream-crossed-chunk", True): "crossed",
    }  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            got = {}
            for (kind, stream), _ in expected.items():
                body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": stream}
                prompt_tokens = max(1, len(json.dumps(body["messages"], sort_keys=True)) // 4)
                url = f"http://127.0.0.1:{unused_tcp_port}/{kind}"
                outcome = await soak.send(session, url, run, 1, "alpha", body, prompt_tokens, 2)
                got[(kind, stream)] = outcome.kind
            closed = f"http://127.0.0.1:{soak.procs.free_port()}/x"
            body = {"model": "alpha", "messages": [], "stream": False}
            got[("refused", False)] = (await soak.send(session, closed, run, 2, "alpha", body, 1, 2)).kind
    finally:
        await runner.cleanup()
    assert got == {**expected, ("refused", False): "transport"}
