"""Property tests against the real service (a subprocess on loopback, tests/fuzz/conftest.py).

Whatever a client sends — malformed or deeply nested JSON, wrong types for `model`, odd
multipart forms, odd paths, methods, query strings and headers, bodies around the size
limit — the service answers without a 5xx of its own, every error it produces is
`{"error": "<message>"}`, and (checked after each test by `survives`) it is still alive,
healthy, serving chat requests and has logged no traceback.
"""

from __future__ import annotations

import gzip
import json
import socket
import string
import zlib
from typing import Any
from urllib.parse import quote

from hypothesis import assume, currently_in_test_context, event, example, given
from hypothesis import strategies as st

from tests.fuzz.conftest import MAX_BODY
from tests.fuzz.strategies import CONTENT_TYPES, bodies, multipart_requests
from tests.fuzz.support import Answer, check_answer, exchange, fuzz, opens_a_stream, reaches_fake_controls
from tests.integration.conftest import RunningService

# --------------------------------------------------------------------------- strategies

BODY_PATHS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/responses",
    "/v1/messages", "/v1/messages/count_tokens", "/v1/audio/speech", "/v1/images/generations",
    "/completion", "/infill", "/tokenize", "/embedding", "/chat/completions", "/no/such/endpoint",
    "/upstream/alpha/v1/chat/completions", "/upstream/beta/v1/embeddings", "/upstream/alpha/echo",
]
MULTIPART_PATHS = ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits"]


# Headers that change how the body is read: encodings it is not in, an expectation, charsets.
# (`br` and `zstd` are left out: the service forwards them untouched, and the fake upstream's
# HTTP parser, lacking those decoders, refuses them without marking its answer as its own.)
ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress}
odd_headers = st.lists(
    st.sampled_from([
        ("Content-Encoding", "gzip"), ("Content-Encoding", "deflate"), ("Content-Encoding", "identity"),
        ("Content-Encoding", "x-nonsense"),
        ("Expect", "100-continue"), ("Accept", "text/event-stream"), ("Accept-Encoding", "gzip"),
        ("X-Session-ID", "\u00e9t\u00e9"), ("Origin", "http://elsewhere"), ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
    ]),
    max_size=2, unique=True,
)


def _send(svc: RunningService, method: str, target: str | bytes, **kwargs: Any) -> Answer:
    answer = exchange(svc.url, method, target, **kwargs)
    if currently_in_test_context():  # the statuses seen, for --hypothesis-show-statistics
        event(f"{answer.status} from {'upstream' if answer.from_upstream else 'service'}")
    check_answer(answer, method, (method, target, kwargs.get("headers"), kwargs.get("body", b"")[:200]))
    return answer


# --------------------------------------------------------------------------- bodies


# Found by this test, kept as explicit examples: a body nested deeper than orjson writes
# (254 levels) but not than it reads (1024) was a 500 when a model's filters rewrote it (now
# a 400). (It also found the 500 for bodies not in their Content-Encoding: see below.)
@example(path="/upstream/alpha/v1/chat/completions", ctype=None, body=b'{"a":' * 300 + b"1" + b"}" * 300,
         headers=[], chunked=False)
@example(path="/v1/chat/completions", ctype="application/json",
         body=b'{"model":"beta","messages":' + b"[" * 500 + b"]" * 500 + b"}", headers=[], chunked=True)
@fuzz(250)
@given(path=st.sampled_from(BODY_PATHS), ctype=st.none() | st.sampled_from(CONTENT_TYPES), body=bodies,
       headers=odd_headers, chunked=st.booleans())
def test_odd_request_bodies(svc: RunningService, path: str, ctype: str | None, body: bytes,
                            headers: list[tuple[str, str]], chunked: bool) -> None:
    """Malformed, nested, wrongly typed or garbage bodies to every inference endpoint class."""
    encoding = dict(headers).get("Content-Encoding")
    if encoding in ENCODERS:
        # Encoded as it says (so the service, which never decodes bodies, cannot read the model
        # of a compressed one): a body that is not would be refused by the fake upstream's HTTP
        # parser, whose refusals are not marked as its own. Bodies not in their encoding are
        # `test_bodies_not_in_their_encoding_are_not_decoded`.
        body = ENCODERS[encoding](body)
    sent = ([("Content-Type", ctype)] if ctype is not None else []) + headers
    answer = _send(svc, "POST", path, headers=sent, body=body, chunked=chunked)
    if answer.status == 200 and not answer.from_upstream:
        raise AssertionError(f"a 200 that no upstream produced: {answer}")


@fuzz(25)
@given(excess=st.integers(-2048, 2048), kind=st.sampled_from(["json", "multipart", "upstream"]),
       chunked=st.booleans())
def test_bodies_around_the_size_limit(svc: RunningService, excess: int, kind: str, chunked: bool) -> None:
    """1 MiB ± 2 KiB, announced or chunked: at most the limit is served, more is 413."""
    size = MAX_BODY + excess
    if kind == "json":
        head = b'{"model":"alpha","messages":[{"role":"user","content":"'
        body = head + b"x" * max(0, size - len(head) - 4) + b'"}]}'
        path, ctype = "/v1/chat/completions", "application/json"
    elif kind == "multipart":
        head = (b'--b0undary\r\nContent-Disposition: form-data; name="model"\r\n\r\nbeta\r\n'
                b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n')
        tail = b"\r\n--b0undary--\r\n"
        body = head + b"\xff" * max(0, size - len(head) - len(tail)) + tail
        path, ctype = "/v1/audio/transcriptions", "multipart/form-data; boundary=b0undary"
    else:
        body = b"z" * size
        path, ctype = "/upstream/alpha/echo", "application/octet-stream"
    answer = _send(svc, "POST", path, headers=[("Content-Type", ctype)], body=body, chunked=chunked)
    if len(body) > MAX_BODY:
        assert answer.status == 413, answer
    else:
        assert answer.status == 200 and answer.from_upstream, answer


def test_bodies_not_in_their_encoding_are_not_decoded(svc: RunningService) -> None:
    """Found by `test_odd_request_bodies`: a body labelled gzip or deflate that is not was a 500
    (`RequestPayloadError` while aiohttp decompressed it). Bodies are no longer decoded, so
    they are read as they are: here, JSON naming an unknown model, and bytes naming none."""
    for encoding in ("gzip", "deflate", "br", "zstd"):
        headers = [("Content-Type", "application/json"), ("Content-Encoding", encoding)]
        answer = _send(svc, "POST", "/v1/chat/completions", headers=headers, body=b'{"model":"nobody"}')
        assert answer.status == 404, answer
        answer = _send(svc, "POST", "/v1/chat/completions", headers=headers, body=b"\x00\x01")
        assert answer.status == 400, answer


def test_compressed_bodies_pass_through_as_sent(svc: RunningService) -> None:
    """A `Content-Encoding: gzip` body reaches the upstream as sent, header and bytes (it used
    to be decompressed here and forwarded as plain bytes still labelled gzip)."""
    original = b'{"hello":"world"}'
    answer = _send(svc, "POST", "/upstream/alpha/echo", body=gzip.compress(original),
                   headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
    echoed = json.loads(answer.body)
    assert answer.status == 200 and echoed["headers_lower"]["content-encoding"] == "gzip"
    assert echoed["body_text"] == original.decode()  # the upstream decompressed it: it was still gzip


# --------------------------------------------------------------------------- multipart

@fuzz(200)
@given(path=st.sampled_from(MULTIPART_PATHS + ["/v1/chat/completions", "/upstream/beta/v1/audio/transcriptions"]),
       form=multipart_requests())
def test_odd_multipart_forms(svc: RunningService, path: str, form: tuple[str, bytes]) -> None:
    """Missing or wrong boundaries, `model` twice or empty, encoded parts, binary garbage."""
    ctype, body = form
    _send(svc, "POST", path, headers=[("Content-Type", ctype)], body=body)


# --------------------------------------------------------------------------- paths and methods

# One prefix per endpoint class: inference, management, the UI API, upstream passthrough,
# the UI's and the docs' static files, metrics and logs, the catch-all.
PREFIXES = [
    "/v1/chat/completions", "/v1/models", "/models", "/health", "/wol-health", "/running", "/metrics",
    "/logs", "/api/models", "/api/metrics/activity", "/api/metrics/stats", "/api/inflight",
    "/api/inflight/1/cancel", "/api/version", "/api/models/unload/nobody", "/upstream/alpha",
    "/upstream/beta/v1/models", "/upstream/nobody", "/upstream/org", "/ui", "/ui/app.js", "/swagger",
    "/swagger/assets", "/swagger/assets/swagger-ui.css", "/openapi.json", "/favicon.ico", "/props", "/slots", "", "/x",
]
# Methods that, on the matching routes, unload models (cheap, but each costs a restart of
# ~0.6 s afterwards): covered by few examples rather than left out.
UNLOADING = {("GET", "/unload"), ("POST", "/api/models/unload"), ("DELETE", "/upstream/alpha")}

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# Methods aiohttp's HTTP parser (llhttp) knows; any other token is refused by the parser
# itself, before the service sees the request (see `test_odd_paths_methods_and_queries`).
KNOWN_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "MKCOL",
                 "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "PURGE", "M-SEARCH", "NOTIFY", "QUERY"]
methods = st.one_of(st.sampled_from(KNOWN_METHODS), st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12))
# Path segments: dot segments raw and encoded, empty (`//`), encoded slashes and backslashes,
# percent-encoded random bytes (NUL and invalid UTF-8 included), and long ones.
segments = st.one_of(
    st.sampled_from(["..", ".", "", "%2e%2e", "%2E.", ".%2e", "%252e%252e", "%2f", "%5c", "..%2f", "%00",
                     "%0d%0a", "alpha", "beta", "load", "health", "v1", "models", "%7e", "~", "a;b", "a,b"]),
    st.binary(max_size=12).map(lambda b: quote(b, safe="")),
    st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@", max_size=12),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "%41", "/", "./"]), st.integers(100, 2500)),
    st.builds(lambda n, ext: "a" * n + ext, st.integers(200, 1000), st.sampled_from([".js", ".css", ".png", ""])),
)
query_strings = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(
            st.sampled_from(["model", "limit", "page", "sort", "order", "start", "end", "min_id", "max_id", "x", ""]),
            st.one_of(st.binary(max_size=12).map(lambda b: quote(b, safe="")), st.text(max_size=12).map(quote),
                      st.sampled_from(["alpha", "beta", "99999999999999999999999", "-1", "0", "%", "%zz", "a=b"])),
        ),
        max_size=5,
    ).map(lambda pairs: "?" + "&".join(f"{key}={value}" for key, value in pairs)),
    st.sampled_from(["?", "??", "?&&&", "?=", "?model", "?model=", "?%ff=%fe", "?" + "a=1&" * 1000]),
)


# Found by this test: a missing Swagger UI asset was an empty 404 (aiohttp's static route),
# a file name longer than the file system allows a 500 (UI files and Swagger UI assets).
@example(method="GET", prefix="/swagger/assets/swagger-ui.css", rest=["alpha"], query="", trailing_slash=False, body=b"", preflight=None)
@example(method="GET", prefix="/swagger/assets", rest=["a" * 300], query="", trailing_slash=False, body=b"", preflight=None)
@example(method="HEAD", prefix="/ui", rest=["a" * 300 + ".js"], query="", trailing_slash=False, body=b"", preflight=None)
@example(method="GET", prefix="/ui", rest=["a" * 300 + ".js"], query="", trailing_slash=False, body=b"", preflight=None)
@fuzz(400)
@given(method=methods, prefix=st.sampled_from(PREFIXES), rest=st.lists(segments, max_size=4), query=query_strings,
       trailing_slash=st.booleans(), body=st.sampled_from([b"", b'{"model":"alpha"}', b'{"model":"nobody"}', b"\x00"]),
       preflight=st.none() | st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40))
def test_odd_paths_methods_and_queries(svc: RunningService, method: str, prefix: str, rest: list[str], query: str,
                                       trailing_slash: bool, body: bytes, preflight: str | None) -> None:
    """Every endpoint class under odd methods, paths and query strings (and CORS preflights,
    with odd lists of headers, when `preflight` is set)."""
    path = prefix + "".join("/" + segment for segment in rest) + ("/" if trailing_slash else "")
    target = (path or "/") + query
    assume(len(target) < 8000)  # longer request lines are refused by the HTTP parser (see below)
    assume(not opens_a_stream(method, target) and not reaches_fake_controls(target))
    if method in ("GET", "POST", "DELETE") and (method, path.rstrip("/")) in UNLOADING:
        assume(rest == [] and query == "")
    headers = [("Content-Type", "application/json")] if body else []
    if preflight is not None:
        headers += [("Origin", "http://elsewhere"), ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", preflight)]
    answer = exchange(svc.url, method, target, headers=headers, body=body)
    event(f"{answer.status} from {'upstream' if answer.from_upstream else 'service'}")
    if method not in KNOWN_METHODS and answer.status == 400 and answer.body.startswith(b"Invalid method encountered"):
        return  # aiohttp's parser refuses methods it does not know, as plain text: a known limitation
    check_answer(answer, method, (method, target, body))


@fuzz(60)
@given(query=query_strings, path=st.sampled_from([
    "/api/metrics/activity", "/api/metrics/stats", "/logs", "/running", "/v1/models", "/health", "/props",
    "/slots", "/metrics", "/api/models", "/api/inflight", "/upstream/alpha/health", "/upstream/alpha/load",
    "/api/version", "/openapi.json", "/ui/",
]))
def test_odd_query_strings(svc: RunningService, path: str, query: str) -> None:
    """Every GET endpoint that reads a query, under odd, repeated, overlong and invalid values."""
    assume(len(path + query) < 8000)
    _send(svc, "GET", path + query)


ACTIVITY_KEYS = ["limit", "page", "min_id", "max_id", "start", "end", "sort", "order", "model"]
numbers = st.one_of(st.integers().map(str), st.sampled_from(["9" * 19, "9" * 30, "1e3", "0x10", " 1", "١", "-0", "+5"]))
times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-31T12:00:00Z", "now", ""]),
)


# Found by this test: numbers beyond SQLite's integers were a 500 (OverflowError).
@example(params=[("page", "9" * 20)], path="/api/metrics/activity")
@example(params=[("min_id", "9" * 30), ("max_id", "9" * 19)], path="/api/metrics/activity")
@fuzz(80)
@given(params=st.lists(st.tuples(st.sampled_from(ACTIVITY_KEYS), st.one_of(numbers, times, st.text(max_size=10))),
                       max_size=6),
       path=st.sampled_from(["/api/metrics/activity", "/api/metrics/stats"]))
def test_activity_queries(svc: RunningService, params: list[tuple[str, str]], path: str) -> None:
    """The activity log's filters and paging with out-of-range numbers and odd times: 200 or 400."""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params)
    answer = _send(svc, "GET", f"{path}?{query}")
    assert answer.status in (200, 400), answer


# --------------------------------------------------------------------------- below HTTP


@fuzz(60)
@given(line=st.one_of(
    st.binary(min_size=1, max_size=200),
    st.builds(lambda m, t: m + b" " + t + b" HTTP/1.1",
              st.sampled_from([b"GET", b"POST", b"G\x00T", b"GET GET", b"\xff", b""]),
              st.one_of(st.binary(max_size=40), st.sampled_from([b"/" + b"a" * 9000, b"*", b"http://x", b"//", b"/\x7f"]))),
))
def test_requests_http_cannot_parse(svc: RunningService, line: bytes) -> None:
    """Request lines that are not HTTP (raw control bytes, invalid tokens, overlong): the
    parser refuses them with a 4xx, or the connection is closed; nothing else happens."""
    host, port = svc.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(line.replace(b"\r\n", b"") + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            data = b""
    if data:
        status = int(data.split(b" ", 2)[1])
        assert status < 500, data[:300]
