"""Access control against the real service: API keys on every endpoint class, the web UI
with Basic auth, keys kept from upstreams and logs, the body size limit, and crafted paths
and model names that must never reach anything but the configured upstreams."""

from __future__ import annotations

import base64
import json
import random
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.fakes import FAKE_UPSTREAM, fake_cmd
from tests.integration.conftest import HI, RunningService, serving, wait_until

KEY = "sk-llamaswap-7c1e9a4b2f"
ENV_KEY = "sk-from-env-55d0c3e8a1"  # the second key, from ${env.LS_TEST_KEY}
WRONG = "sk-llamaswap-7c1e9a4b2X"  # differs from KEY in its last character only
UPSTREAM_SECRET = "upstream-only-secret-4242"  # on a model's command line, never a client key
COOKIE = "session=cookie-secret-9f8e7d"
UNAUTHORIZED = {"error": "unauthorized: invalid or missing API key"}

# `prefixed` sends everything under the fake upstream's /echo/, which reports the path it
# received: a request that escaped the prefix would show (and not be answered by echo).
PREFIXED = f"""
  prefixed:
    cmd: {fake_cmd(name="prefixed")}
    proxy: http://127.0.0.1:${{PORT}}/echo
"""
# `secretive` has a secret on its command line (llama-server's `--api-key X` style);
# sh passes the fake upstream only the arguments it understands.
SECRETIVE = f"""
  secretive:
    cmd: /bin/sh -c 'exec "$0" "$1" --port "$2" --name secretive' {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_UPSTREAM))} ${{PORT}} --api-key {UPSTREAM_SECRET}
"""

KEYED = f"""
logLevel: debug
logToStdout: both
apiKeys: [{KEY}, "${{env.LS_TEST_KEY}}"]
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=3)}
{PREFIXED}{SECRETIVE}"""

OPEN = f"""
logToStdout: both
maxBodyMB: 1
models:
  alpha:
    cmd: {fake_cmd(name="alpha", chunks=3)}
{PREFIXED}"""

FORWARDING = f"""
apiKeys: [{KEY}]
forwardApiKeys: true
models:
{PREFIXED}"""


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def x_api_key(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def _service(tmp: Path, config: str, **launch: Any) -> Iterator[RunningService]:
    config_path = tmp / "config.yaml"
    config_path.write_text(f"startPort: {random.randrange(10000, 32000, 50)}\n" + config)  # apart from other services
    with serving(config_path, tmp / "service.log", **launch) as service:
        yield service


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    yield from _service(tmp_path_factory.mktemp("keyed"), KEYED, env={"LS_TEST_KEY": ENV_KEY})


@pytest.fixture(scope="module")
def open_svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    yield from _service(tmp_path_factory.mktemp("open"), OPEN)


def raw_request(service: RunningService, head: bytes, body: bytes = b"", timeout: float = 20.0) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client normalises the path); (status, body)."""
    url = httpx.URL(service.url)
    with socket.create_connection((url.host, url.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def raw_get(service: RunningService, target: str, method: str = "GET", headers: str = "") -> tuple[int, bytes]:
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
    return raw_request(service, head.encode("latin-1"))


# --------------------------------------------------------------------------- keyed: who gets in

OPEN_ENDPOINTS = [("GET", "/health"), ("HEAD", "/health"), ("GET", "/wol-health"), ("GET", "/favicon.ico")]

# One request per endpoint class; none of them may do anything without a key.
PROTECTED = [
    ("POST", "/v1/chat/completions", {"model": "alpha", "messages": HI}),
    ("POST", "/v1/embeddings", {"model": "alpha", "input": "x"}),
    ("POST", "/completion", {"model": "alpha", "prompt": "x"}),
    ("GET", "/props?model=alpha", None),
    ("GET", "/v1/models", None),
    ("GET", "/models", None),
    ("GET", "/running", None),
    ("GET", "/unload", None),
    ("POST", "/api/models/unload", None),
    ("POST", "/api/models/unload/alpha", None),
    ("GET", "/metrics", None),
    ("GET", "/logs", None),
    ("GET", "/logs/stream", None),
    ("GET", "/logs/stream/proxy", None),
    ("GET", "/api/models", None),
    ("GET", "/api/events", None),
    ("GET", "/api/metrics/activity", None),
    ("GET", "/api/metrics/stats", None),
    ("GET", "/api/inflight", None),
    ("POST", "/api/inflight/1/cancel", None),
    ("GET", "/api/version", None),
    ("GET", "/ui/", None),
    ("GET", "/ui/app.js", None),
    ("GET", "/ui", None),
    ("GET", "/swagger/", None),
    ("GET", "/openapi.json", None),
    ("GET", "/upstream/alpha/load", None),
    ("GET", "/upstream/alpha/health", None),
    ("POST", "/upstream/alpha/echo", {"x": 1}),
    ("DELETE", "/upstream/alpha", None),
    ("GET", "/upstream/alpha", None),
    ("POST", "/health", {"model": "alpha"}),  # not the health route: the proxy's catch-all
    ("GET", "/health/", None),
    ("POST", "/favicon.ico", {"model": "alpha"}),
    ("OPTIONS", "/v1/chat/completions", None),  # not a CORS preflight: proxied, so it needs a key
    ("PUT", "/v1/anything", {"model": "alpha"}),
]


def test_open_endpoints_need_no_key(keyed: RunningService) -> None:
    for method, path in OPEN_ENDPOINTS:
        response = keyed.http.request(method, path)
        assert response.status_code == 200, (method, path)
    assert keyed.http.get("/wol-health").json()["status"] == "ok"
    assert keyed.http.get("/favicon.ico").headers["content-type"] == "image/svg+xml"
    root = keyed.http.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (302, "/ui/")
    preflight = keyed.http.options("/v1/chat/completions", headers={
        "Origin": "http://elsewhere", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_every_other_endpoint_needs_a_key(keyed: RunningService, method: str, path: str, body: Any) -> None:
    for headers in ({}, bearer(WRONG), x_api_key(WRONG), basic(WRONG), basic(KEY[:-1]), {"Authorization": "Bearer"},
                    {"Authorization": f"Token {KEY}"}, {"Cookie": COOKIE}):
        response = keyed.http.request(method, path, json=body, headers=headers, follow_redirects=False)
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.headers["www-authenticate"] == 'Basic realm="llama-swap"'
        if method != "HEAD":
            assert response.json() == UNAUTHORIZED
    assert keyed.health()["models"] == {}, "a refused request started a model"


def test_each_way_of_presenting_the_key(keyed: RunningService) -> None:
    for headers in (bearer(KEY), x_api_key(KEY), basic(KEY), basic(KEY, user=""), bearer(ENV_KEY),
                    x_api_key(ENV_KEY), basic(ENV_KEY, user="admin"), {"Authorization": f"bearer {KEY}"}):
        response = keyed.http.get("/v1/models", headers=headers)
        assert response.status_code == 200, headers
        assert {m["id"] for m in response.json()["data"]} == {"alpha", "prefixed", "secretive"}


def test_precedence_basic_then_bearer_then_x_api_key(keyed: RunningService) -> None:
    """The first credential present is the one checked, as in the Go version."""
    assert keyed.http.get("/running", headers={**basic(KEY), "x-api-key": WRONG}).status_code == 200
    assert keyed.http.get("/running", headers={**bearer(KEY), "x-api-key": WRONG}).status_code == 200
    assert keyed.http.get("/running", headers={**bearer(WRONG), "x-api-key": KEY}).status_code == 401
    assert keyed.http.get("/running", headers={**basic(WRONG), "x-api-key": KEY}).status_code == 401
    # an Authorization that holds no key (another scheme, an empty password) defers to x-api-key
    assert keyed.http.get("/running", headers={"Authorization": "Token t", "x-api-key": KEY}).status_code == 200
    assert keyed.http.get("/running", headers={**basic(""), "x-api-key": KEY}).status_code == 200


def test_openai_client_with_the_key(keyed: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0, timeout=60.0)
    answer = client.chat.completions.create(model="alpha", messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "hello from alpha"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="alpha", messages=HI, stream=True) if chunk.choices)  # type: ignore[arg-type]
    assert text == "tok0 tok1 tok2 "
    refused = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=WRONG, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as excinfo:
        refused.models.list()
    assert excinfo.value.status_code == 401


def test_web_ui_and_its_streams_with_basic_auth(keyed: RunningService) -> None:
    """What a browser does after the Basic prompt: every same-origin request, EventSource
    included, carries the credentials."""
    auth = basic(KEY, user="browser")
    page = keyed.http.get("/", headers=auth, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/ui/app.js", "/ui/style.css", "/ui/favicon.svg", "/ui/models"):
        assert keyed.http.get(asset, headers=auth).status_code == 200, asset
    for path in ("/api/models", "/api/metrics/activity", "/api/inflight", "/api/version", "/logs"):
        assert keyed.http.get(path, headers=auth).status_code == 200, path
    with keyed.http.stream("GET", "/api/events", headers={**auth, "Accept": "text/event-stream"}) as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        first = next(events.iter_lines())
        assert first == "event: message"
    with keyed.http.stream("GET", "/logs/stream/proxy?no-history", headers=auth) as logs:
        assert logs.status_code == 200


def test_upstream_load_unload_with_a_key(keyed: RunningService) -> None:
    load = keyed.http.get("/upstream/alpha/load", headers=x_api_key(KEY))
    assert load.json() == {"status": "ok", "message": "alpha is ready"}
    assert keyed.http.delete("/upstream/alpha", headers=bearer(KEY)).json()["status"] == "ok"


# --------------------------------------------------------------------------- keyed: what the upstream sees


def echo_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return response.json()["headers_lower"]


@pytest.mark.parametrize("headers", [bearer(KEY), basic(KEY), x_api_key(KEY), {**bearer(KEY), **x_api_key(KEY)}],
                         ids=["bearer", "basic", "x-api-key", "both"])
def test_the_key_is_not_forwarded(keyed: RunningService, headers: dict[str, str]) -> None:
    chat = keyed.http.post("/v1/chat/completions", headers={**headers, "Cookie": COOKIE},
                           json={"model": "prefixed", "messages": HI})
    raw = keyed.http.post("/upstream/prefixed/anything", headers=headers, content=b"x")
    for response in (chat, raw):
        seen = echo_headers(response)
        assert "authorization" not in seen and "x-api-key" not in seen
        assert KEY not in json.dumps(seen)
    assert echo_headers(chat)["cookie"] == COOKIE  # only the key's headers are held back


def test_an_upstream_token_in_authorization_passes_when_the_key_is_in_x_api_key(keyed: RunningService) -> None:
    response = keyed.http.post("/upstream/prefixed/x", headers={**x_api_key(KEY), "Authorization": "Token for-upstream"})
    seen = echo_headers(response)
    assert seen["authorization"] == "Token for-upstream" and "x-api-key" not in seen


def test_forward_api_keys_sends_the_key_on(start_service: Any) -> None:
    service = start_service(FORWARDING)
    seen = echo_headers(service.http.post("/upstream/prefixed/x", headers=bearer(KEY)))
    assert seen["authorization"] == f"Bearer {KEY}"
    seen = echo_headers(service.http.post("/v1/chat/completions", headers=x_api_key(KEY),
                                          json={"model": "prefixed", "messages": HI}))
    assert seen["x-api-key"] == KEY
    assert service.http.get("/running", headers=bearer(WRONG)).status_code == 401


def test_without_api_keys_headers_pass_unchanged(open_svc: RunningService) -> None:
    headers = {"Authorization": "Bearer for-llama-server", "x-api-key": "also-upstream", "Cookie": COOKIE}
    seen = echo_headers(open_svc.http.post("/upstream/prefixed/x", headers=headers))
    assert (seen["authorization"], seen["x-api-key"], seen["cookie"]) == tuple(headers.values())


# --------------------------------------------------------------------------- keyed: the log


def test_malformed_credential_headers_are_refused_and_not_logged(keyed: RunningService) -> None:
    for line in (f"Authorization: Bearer {KEY}\x01", f"x-api-key: {WRONG}\x7f", f"Cookie: {COOKIE}\x0b"):
        status, _ = raw_get(keyed, "/v1/models", headers=line + "\r\n")
        assert status == 400
    assert keyed.http.get("/v1/models", headers=bearer(KEY)).status_code == 200


def test_no_key_or_credential_reaches_the_log(keyed: RunningService) -> None:
    """Runs after the module's other keyed tests (file order): every key, wrong key, cookie
    and command-line secret they sent is absent from the log, at `logLevel: debug`."""
    assert keyed.http.get("/upstream/secretive/load", headers=bearer(KEY)).json()["status"] == "ok"
    keyed.http.get("/v1/models", headers={**bearer(WRONG), "Cookie": COOKIE})
    log = keyed.log()
    assert "[secretive] starting:" in log and "--api-key [REDACTED]" in log
    assert "Error handling request" in log  # the malformed requests were logged, without their bytes
    for secret in (KEY, ENV_KEY, WRONG, UPSTREAM_SECRET, COOKIE, "cookie-secret", KEY[:-1]):
        assert secret not in log, f"{secret!r} is in the service log"
    history = keyed.http.get("/logs", headers=bearer(KEY)).text  # what /logs and the UI show
    assert "[secretive] starting:" in history
    for secret in (KEY, ENV_KEY, WRONG, UPSTREAM_SECRET, "cookie-secret"):
        assert secret not in history


def test_startup_warning_only_without_keys() -> None:
    from llama_swap.cli import exposure_warning
    from llama_swap.config import load_config_text

    none, keys = load_config_text(""), load_config_text(f"apiKeys: [{KEY}]\n")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host, 8080, none) is None
    for host in (None, "0.0.0.0", "192.168.1.5", "::", "myhost.lan"):
        warning = exposure_warning(host, 8080, none)
        assert warning is not None and "without apiKeys" in warning
        assert exposure_warning(host, 8080, keys) is None
    assert "all interfaces:8080" in (exposure_warning(None, 8080, none) or "")


# --------------------------------------------------------------------------- body size limit (maxBodyMB: 1)

MIB = 1 << 20


def chat_body(size: int, model: str = "alpha") -> bytes:
    """A chat request of exactly ``size`` bytes."""
    head = json.dumps({"model": model, "messages": HI, "pad": ""})[:-2].encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


def multipart(size: int, model: str = "alpha") -> tuple[bytes, str]:
    boundary = "llamaswapboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + b"\0" * (size - len(head) - len(tail)) + tail, f"multipart/form-data; boundary={boundary}"


def test_bodies_up_to_the_limit_pass(open_svc: RunningService) -> None:
    response = open_svc.http.post("/v1/chat/completions", content=chat_body(MIB),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["upstream"] == "alpha"
    body, ctype = multipart(MIB)
    response = open_svc.http.post("/v1/audio/transcriptions", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200 and response.json()["model"] == "alpha"


@pytest.mark.parametrize("kind", ["json", "multipart", "upstream"])
def test_larger_bodies_get_413(open_svc: RunningService, kind: str) -> None:
    size = MIB + 1
    if kind == "json":
        response = open_svc.http.post("/v1/chat/completions", content=chat_body(size),
                                      headers={"Content-Type": "application/json"})
    elif kind == "multipart":
        body, ctype = multipart(size)
        response = open_svc.http.post("/v1/audio/transcriptions", content=body, headers={"Content-Type": ctype})
    else:
        response = open_svc.http.post("/upstream/alpha/echo", content=b"x" * size)
    assert response.status_code == 413
    assert response.json() == {"error": f"request body too large: {size} bytes exceeds the 1 MiB limit (maxBodyMB)"}


def test_chunked_bodies_are_cut_at_the_limit(open_svc: RunningService) -> None:
    """No Content-Length: the body is read up to the limit, then refused."""
    def chunks() -> Iterator[bytes]:
        yield chat_body(64 * 1024)[:-2]
        for _ in range(40):
            yield b"x" * 64 * 1024

    response = open_svc.http.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large: it exceeds the 1 MiB limit (maxBodyMB)"}
    response = open_svc.http.post("/upstream/alpha/echo", content=iter([b"y" * 600_000] * 2))
    assert response.status_code == 413


def test_a_slow_oversized_upload_does_not_hold_up_others(open_svc: RunningService) -> None:
    result: dict[str, Any] = {}

    def upload() -> None:
        def trickle() -> Iterator[bytes]:
            for _ in range(12):
                yield b"z" * 100_000
                time.sleep(0.05)

        with httpx.Client(base_url=open_svc.url, timeout=30) as client:
            result["status"] = client.post("/upstream/alpha/echo", content=trickle()).status_code

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        started = time.monotonic()
        for _ in range(5):
            assert open_svc.chat("alpha").status_code == 200
        assert time.monotonic() - started < 5
    finally:
        thread.join(timeout=30)
    assert result["status"] == 413
    assert open_svc.http.get("/health").status_code == 200


def test_reload_changes_the_limit(start_service: Any) -> None:
    service = start_service(OPEN)
    body = chat_body(MIB + MIB // 2)
    assert service.http.post("/v1/chat/completions", content=body).status_code == 413
    service.config_path.write_text(service.config_path.read_text().replace("maxBodyMB: 1", "maxBodyMB: 2"))
    service.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config reloaded" in service.log(), timeout=10)
    assert service.http.post("/v1/chat/completions", content=body).status_code == 200
    assert service.http.post("/upstream/alpha/echo", content=iter([b"x" * MIB] * 3)).status_code == 413


# --------------------------------------------------------------------------- crafted paths and names


def test_proxied_paths_stay_under_the_models_upstream(open_svc: RunningService) -> None:
    """The model's `proxy` is http://127.0.0.1:PORT/echo: what the upstream receives is always
    below /echo/, whatever the client's path looks like."""
    for target, expected in [
        ("/upstream/prefixed/a/b?x=../..", "/echo/a/b"),
        ("/upstream/prefixed//evil.example/x", "/echo//evil.example/x"),
        ("/upstream/prefixed/@evil.example/x", "/echo/@evil.example/x"),
        ("/upstream/prefixed/a%2Fb", "/echo/a%2Fb"),
        ("/upstream/prefixed/...", "/echo/..."),
    ]:
        status, body = raw_get(open_svc, target)
        assert status == 200, (target, body)
        assert json.loads(body)["path"] == expected, target
    seen = open_svc.http.post("/v1/chat/completions", json={"model": "prefixed", "messages": HI}).json()
    assert seen["path"] == "/echo/v1/chat/completions"


CRAFTED_TARGETS = [
    "/upstream/prefixed/../../etc/passwd",
    "/upstream/prefixed/..",
    "/upstream/prefixed/%2e%2e/%2e%2e/etc/passwd",
    "/upstream/prefixed/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/upstream/prefixed/x%2F..%2F..%2F..%2Fetc",
    "/upstream/prefixed/..\\..\\etc",
    "/upstream/prefixed/%5c..%5c..%5cetc",
    "/upstream/prefixed/%252e%252e/%252e%252e/etc",
    "/upstream/prefixed/./x",
    "/upstream/../upstream/prefixed/x",
    "/upstream/prefixed%2F..%2F..%2Fetc/x",
    "/upstream/prefixed/x%00y",
    "/upstream/%00/x",
    "/upstream/prefixed/x%0d%0aHost:%20evil.example",
    "/upstream/%2e%2e/x",
    "/upstream/..%2fprefixed/x",
    "/v1/../upstream/prefixed/x",
    "http://evil.example/upstream/prefixed/x",
    "http://127.0.0.1:1/v1/models",
]


@pytest.mark.parametrize("target", CRAFTED_TARGETS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_crafted_paths_are_refused(open_svc: RunningService, target: str, method: str) -> None:
    body = b'{"model":"prefixed","messages":[]}' if method == "POST" else b""
    head = (f"{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, answer = raw_request(open_svc, head, body)
    assert status == 400, (target, answer)
    assert "invalid request target" in json.loads(answer)["error"]


def test_odd_names_get_4xx_never_5xx(open_svc: RunningService) -> None:
    long_name = "m" * 100_000
    odd = ["../../etc/passwd", "\u0000", "a\u0000b", "%2e%2e", "prefixed/../alpha", "prefixed/", "alpha ",
           "alpha\r\nX-Injected: 1", "💥", "\udcff", long_name, "x" * 5000]
    for name in odd:
        response = open_svc.http.post("/v1/chat/completions", content=json.dumps({"model": name, "messages": HI}),
                                      headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 404), (name[:40], response.text[:200])  # 400: a lone surrogate
        if name == "\udcff":
            continue  # not encodable as UTF-8 anywhere else
        response = open_svc.http.get("/props", params={"model": name[:2000]})
        assert response.status_code == 404, name[:40]
        if name.strip() != "alpha":  # form fields are trimmed: "alpha " is alpha there
            body, ctype = multipart(4096, model=name[:2000])
            response = open_svc.http.post("/v1/audio/transcriptions", content=body, headers={"Content-Type": ctype})
            assert response.status_code in (400, 404), name[:40]
    for value in ("", 5, None, ["alpha"], {"id": "alpha"}, True):
        response = open_svc.http.post("/v1/chat/completions", json={"model": value, "messages": HI})
        assert response.status_code == 400, value
    for target in ["/upstream/" + "a" * 5000 + "/x", "/upstream/%ff%fe/x", "/upstream/%C0%AE%C0%AE/x",
                   "/upstream/" + "a" * 9000, "/upstream/" + "%41" * 3000 + "/x", "/upstream/nobody/" + "v" * 8000]:
        status, _ = raw_get(open_svc, target)
        assert 400 <= status < 500, target[:60]
    for method in ("PROPFIND", "TRACE", "CONNECT"):
        status, _ = raw_get(open_svc, "/upstream/nobody/x", method=method)
        assert 400 <= status < 500, method
    assert open_svc.http.get("/health").json()["status"] == "ok"
    assert open_svc.chat("alpha").status_code == 200


def test_nothing_escaped_to_the_upstream(open_svc: RunningService) -> None:
    """Every request the `prefixed` upstream logged (its own access lines, in the service's
    log) was for a path under /echo/ — its health checks included."""
    open_svc.http.post("/v1/chat/completions", json={"model": "prefixed", "messages": HI})
    lines = [line for line in open_svc.log().splitlines() if "[prefixed] prefixed " in line]
    paths = [line.split("[prefixed] prefixed ", 1)[1].split(" ", 1)[1] for line in lines]
    assert paths and all(path.startswith("/echo/") for path in paths), paths
