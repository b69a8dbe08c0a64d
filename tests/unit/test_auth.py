"""Access control pieces (server/auth.py): which key a request presents, constant-time
comparison, redaction of secrets in headers, argv and log lines, request-target checks."""

from __future__ import annotations

import base64
import hmac
import logging
import sys
from typing import Iterator

import pytest
from aiohttp import http_exceptions, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from multidict import CIMultiDict

from llama_swap.observe.logs import GoStyleFormatter
from llama_swap.redact import REDACTED, is_sensitive_header, mask_secrets, redact_argv, redact_headers, use_secrets
from llama_swap.server import auth
from llama_swap.server.auth import (
    CARRIED_BY,
    QuietBadRequests,
    check_key,
    key_digests,
    key_matches,
    presented_key,
    target_problem,
)
from llama_swap.wire.headers import REQUEST_DROP, request_head

KEY = "sk-test-0123456789"
OTHER = "sk-other-abcdef"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict((name.replace("_", "-"), value) for name, value in values.items())


# --------------------------------------------------------------------------- which key


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"Authorization": basic("anyone", KEY)}, (KEY.encode(), "basic")),
        ({"Authorization": basic("", KEY)}, (KEY.encode(), "basic")),
        ({"Authorization": basic("u", "pass:with:colons")}, (b"pass:with:colons", "basic")),
        ({"Authorization": f"Bearer {KEY}"}, (KEY.encode(), "bearer")),
        ({"Authorization": f"bearer   {KEY}  "}, (KEY.encode(), "bearer")),  # scheme is case-insensitive
        ({"Authorization": basic("u", KEY).replace("Basic", "BASIC")}, (KEY.encode(), "basic")),
        ({"x-api-key": KEY}, (KEY.encode(), "x-api-key")),
        ({"X-API-KEY": f" {KEY} "}, (KEY.encode(), "x-api-key")),
        # precedence: Basic, then Bearer, then x-api-key — the first present one is checked
        ({"Authorization": basic("u", KEY), "x-api-key": OTHER}, (KEY.encode(), "basic")),
        ({"Authorization": f"Bearer {OTHER}", "x-api-key": KEY}, (OTHER.encode(), "bearer")),
        # an unusable Authorization falls through to x-api-key
        ({"Authorization": basic("u", ""), "x-api-key": KEY}, (KEY.encode(), "x-api-key")),
        ({"Authorization": "Basic not-base64!", "x-api-key": KEY}, (KEY.encode(), "x-api-key")),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode(), "x-api-key": KEY},
         (KEY.encode(), "x-api-key")),
        ({"Authorization": "Bearer", "x-api-key": KEY}, (KEY.encode(), "x-api-key")),
        ({"Authorization": f"Token {KEY}", "x-api-key": KEY}, (KEY.encode(), "x-api-key")),
        ({"Authorization": f"Token {KEY}"}, None),
        ({}, None),
        ({"x-api-key": "  "}, None),
    ],
)
def test_presented_key(given: dict[str, str], expected: tuple[bytes, str] | None) -> None:
    assert presented_key(CIMultiDict(given)) == expected


def test_basic_password_keeps_non_ascii_bytes() -> None:
    token = base64.b64encode("user:clé".encode()).decode()
    assert presented_key(headers(Authorization=f"Basic {token}")) == ("clé".encode(), "basic")


# --------------------------------------------------------------------------- comparison


def test_key_matches_any_configured_key() -> None:
    digests = key_digests((KEY, OTHER))
    assert key_matches(KEY.encode(), digests)
    assert key_matches(OTHER.encode(), digests)
    assert not key_matches(b"sk-test-012345678", digests)  # a prefix
    assert not key_matches(KEY.encode() + b"9", digests)  # an extension
    assert not key_matches(b"", digests)
    assert not key_matches(None, digests)
    assert not key_matches(KEY.encode(), ())


def test_digests_are_all_one_length() -> None:
    """Comparing fixed-length digests: the time does not depend on the keys' lengths."""
    digests = key_digests(("a", "b" * 500, KEY))
    assert {len(d) for d in digests} == {32}


def test_every_key_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """No short-circuit: which key matched (first or last) cannot be told from the time."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    digests = key_digests((KEY, OTHER, "third-key"))
    for presented in (KEY, "third-key", "wrong", None):
        calls.clear()
        key_matches(presented.encode() if presented else None, digests)
        assert len(calls) == 3


# --------------------------------------------------------------------------- check_key


def _request(**values: str) -> web.Request:
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers(**values))


def test_check_key_refuses_with_basic_challenge() -> None:
    for request in (_request(), _request(Authorization="Bearer nope"), _request(x_api_key="nope")):
        refused = check_key(request, [KEY])
        assert refused is not None and refused.status == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
        assert refused.content_type == "application/json"
        assert refused.body == b'{"error":"unauthorized: invalid or missing API key"}'


def _sent_upstream(given: dict[str, str], strip: frozenset[str]) -> dict[str, str]:
    """The fields the lane sends upstream for a request with ``given`` fields."""
    raw = [(name.encode(), value.encode()) for name, value in given.items()]
    drop = REQUEST_DROP | {name.encode() for name in strip}
    head = request_head(b"POST", b"/v1/chat/completions", raw, host=b"up:1", drop=drop, peer=None, length=0)
    lines = head.decode().split("\r\n")[1:-2]
    return {name: value for name, value in (line.split(": ", 1) for line in lines)}


@pytest.mark.parametrize(
    ("given", "stripped"),
    [
        ({"Authorization": f"Bearer {KEY}", "x-api-key": "other"}, {"authorization", "x-api-key"}),
        ({"Authorization": basic("ui", KEY)}, {"authorization", "x-api-key"}),
        ({"x-api-key": KEY, "Authorization": "Token for-the-upstream"}, {"x-api-key"}),
    ],
)
def test_accepted_key_is_not_forwarded(given: dict[str, str], stripped: set[str]) -> None:
    request = make_mocked_request("POST", "/v1/chat/completions", headers=CIMultiDict(given))
    assert check_key(request, [OTHER, KEY]) is None
    found = presented_key(CIMultiDict(given))
    assert found is not None and CARRIED_BY[found[1]] == stripped
    sent = {name.lower() for name in _sent_upstream(given, CARRIED_BY[found[1]])}
    assert not sent & stripped
    assert sent == {name.lower() for name in given} - stripped | {"host", "content-length"}


def test_forward_api_keys_keeps_the_headers() -> None:
    sent = _sent_upstream({"Authorization": f"Bearer {KEY}", "x-api-key": KEY}, frozenset())
    assert (sent["Authorization"], sent["x-api-key"]) == (f"Bearer {KEY}", KEY)


def test_without_keys_headers_pass_unchanged() -> None:
    sent = _sent_upstream({"Authorization": "Bearer upstream-key", "x-api-key": "upstream-key", "Cookie": "a=b"},
                          frozenset())
    assert (sent["Authorization"], sent["x-api-key"], sent["Cookie"]) == ("Bearer upstream-key", "upstream-key", "a=b")


async def test_open_endpoints_are_chosen_by_route_not_path() -> None:
    """`GET /health` and `GET /` are open; `POST /health`, `/health/`, `/ui/` and the
    catch-all proxy route are not."""
    seen: dict[str, bool] = {}

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen[f"{request.method} {request.path}"] = auth.is_open(request)
        return web.Response()

    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application(middlewares=[record])
    for path in ("/health", "/wol-health", "/", "/favicon.ico", "/ui/{path:.*}"):
        app.router.add_get(path, ok)
    app.router.add_route("*", "/{tail:.*}", ok)
    async with TestClient(TestServer(app)) as client:
        for method, path in [("GET", "/health"), ("HEAD", "/health"), ("GET", "/"), ("GET", "/wol-health"),
                             ("GET", "/favicon.ico"), ("POST", "/health"), ("GET", "/health/"),
                             ("GET", "/ui/"), ("POST", "/favicon.ico"), ("GET", "/v1/models"),
                             ("OPTIONS", "/health")]:
            await client.request(method, path)
    assert seen == {
        "GET /health": True, "HEAD /health": True, "GET /": True, "GET /wol-health": True,
        "GET /favicon.ico": True, "POST /health": False, "GET /health/": False, "GET /ui/": False,
        "POST /favicon.ico": False, "GET /v1/models": False, "OPTIONS /health": False,
    }


# --------------------------------------------------------------------------- redaction


def test_sensitive_headers() -> None:
    for name in ("Authorization", "authorization", "Cookie", "Set-Cookie", "X-Api-Key", "Proxy-Authorization", " api-key "):
        assert is_sensitive_header(name)
    for name in ("Content-Type", "X-Session-ID", "User-Agent", "X-Forwarded-For"):
        assert not is_sensitive_header(name)


def test_redact_headers_keeps_names_and_order() -> None:
    given = [("Content-Type", "application/json"), ("Authorization", f"Bearer {KEY}"),
             ("cookie", "session=s3cr3t"), ("X-API-Key", KEY), ("X-Session-ID", "abc")]
    assert redact_headers(given) == [("Content-Type", "application/json"), ("Authorization", REDACTED),
                                     ("cookie", REDACTED), ("X-API-Key", REDACTED), ("X-Session-ID", "abc")]
    assert redact_headers(CIMultiDict(given)) == redact_headers(given)
    assert KEY not in repr(redact_headers({"authorization": KEY}))


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["llama-server", "--port", "5800", "--api-key", "s3cret", "-m", "x.gguf"],
         ["llama-server", "--port", "5800", "--api-key", REDACTED, "-m", "x.gguf"]),
        (["vllm", "serve", "--api-key=s3cret"], ["vllm", "serve", f"--api-key={REDACTED}"]),
        (["srv", "--hf-token", "hf_abc", "--API_KEY", "k"], ["srv", "--hf-token", REDACTED, "--API_KEY", REDACTED]),
        (["srv", "--password", "pw", "-token", "t"], ["srv", "--password", REDACTED, "-token", REDACTED]),
        (["srv", "--api-key"], ["srv", "--api-key"]),  # nothing follows: nothing to hide
        (["srv", "--api-key-file", "/etc/key", "--ctx-size", "2048"],
         ["srv", "--api-key-file", "/etc/key", "--ctx-size", "2048"]),  # a path, not a secret
        (["srv", "--special", "--top-k", "1"], ["srv", "--special", "--top-k", "1"]),
    ],
)
def test_redact_argv(argv: list[str], shown: list[str]) -> None:
    assert redact_argv(argv) == shown


@pytest.fixture
def secrets() -> Iterator[None]:
    use_secrets([KEY, OTHER, "abc"])
    try:
        yield
    finally:
        use_secrets([])


@pytest.mark.usefixtures("secrets")
def test_mask_secrets() -> None:
    assert mask_secrets(f"got Bearer {KEY} and {OTHER}{KEY}") == f"got Bearer {REDACTED} and {REDACTED}{REDACTED}"
    assert mask_secrets("abc is too short to be searched for") == "abc is too short to be searched for"
    use_secrets([])
    assert mask_secrets(KEY) == KEY


@pytest.mark.usefixtures("secrets")
def test_log_lines_never_show_a_configured_key() -> None:
    """Whatever logs it (message, argument, exception), the formatted line has no key."""
    formatter = GoStyleFormatter("rfc3339")
    record = logging.LogRecord("llama_swap.x", logging.INFO, __file__, 1, "header %s", (f"Bearer {KEY}",), None)
    assert KEY not in formatter.format(record) and REDACTED in formatter.format(record)
    try:
        raise ValueError(f"bad key {OTHER}")
    except ValueError:
        record = logging.LogRecord("llama_swap.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert OTHER not in formatter.format(record)


def test_malformed_requests_are_logged_without_their_bytes() -> None:
    """aiohttp quotes the bad line of a request it cannot parse — maybe a credential header."""
    try:
        raise http_exceptions.BadHttpMessage(f"Invalid header value char:\n\n  b'Authorization: Bearer {KEY}\\x01'")
    except http_exceptions.BadHttpMessage:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), sys.exc_info())
    assert QuietBadRequests().filter(record)
    text = GoStyleFormatter("").format(record)
    assert KEY not in text
    assert text == "[WARN] Error handling request from 127.0.0.1: BadHttpMessage (HTTP 400); the request is not quoted"


def test_other_aiohttp_errors_keep_their_traceback() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), sys.exc_info())
    assert QuietBadRequests().filter(record)
    assert record.exc_info is not None and record.levelno == logging.ERROR


# --------------------------------------------------------------------------- request target


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/chat/completions",
        "/upstream/org/model-7b/v1/models?x=../../etc",  # the query is not a path
        "/upstream/m/file.v2.json",
        "/upstream/m/.../x",
        "/upstream/org%2Fmodel/props",  # an encoded slash inside a model id
        "/upstream/m/a%20b",
        "/upstream/m/100%25",
        "/ui/",
        "/",
    ],
)
def test_plain_paths_pass(raw_path: str) -> None:
    assert target_problem(raw_path) is None


@pytest.mark.parametrize(
    ("raw_path", "why"),
    [
        ("http://evil.example/v1/chat/completions", "starting with '/'"),
        ("/upstream/m/../../etc/passwd", "'..' segments"),
        ("/upstream/m/..", "'..' segments"),
        ("/upstream/m/./x", "'..' segments"),
        ("/upstream/m/%2e%2e/%2E%2E/etc", "'..' segments"),
        ("/upstream/m/..%2f..%2fetc", "'..' segments"),
        ("/upstream/m/x%2F..%2F..%2Fetc", "'..' segments"),
        ("/upstream/m/..\\..\\etc", "'..' segments"),
        ("/upstream/m/%5c..%5cetc", "'..' segments"),
        ("/upstream/m/%252e%252e/etc", "'..' segments"),  # double encoding
        ("/v1/../../admin", "'..' segments"),
        ("/upstream/m/x%00y", "control characters"),
        ("/upstream/%00/x", "control characters"),
        ("/upstream/m/x%0d%0aHost:%20evil", "control characters"),
        ("/upstream/m/%25252525252e", "encoded too many times"),
    ],
)
def test_crafted_paths_are_refused(raw_path: str, why: str) -> None:
    problem = target_problem(raw_path)
    assert problem is not None and why in problem
