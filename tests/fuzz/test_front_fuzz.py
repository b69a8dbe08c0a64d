"""The front (the listening socket's HTTP/1.1 parser) fuzzed over real sockets with
connection *scripts*: requests sent one after another on one connection — valid ones of every
framing, and at most one invalid item — whose bytes are cut at random points and sent piece
by piece. Between some pieces the client pauses (a few ms, so the front reads them apart, or
50 ms); after some requests it waits for answer bytes before sending on (so the next request
arrives while an answer is on its way); a request with `Expect: 100-continue` has its body
sent at once or only after its `100 Continue` (or `CONTINUE_WAIT`, as a client does).

Every valid request carries a marker its answer gives back (the fake upstream's `/echo`
returns the query string and a digest of the body; a chat answer counts the prompt's tokens,
and each prompt has its own length), so answers are told apart, not just counted; `/health`
and `/running` are told by their shape. Every script ends with a `Connection: close` request,
so every connection must end with an EOF.

The properties, each failing with its own exception class (so that hypothesis reports a
shrunk script for each property that fails, not one for all):

- never hangs (`Hang`): every wait on the socket is bounded by `WAIT`, the whole script by
  `EXAMPLE_BUDGET`; once every answer due has come the connection must end within `CLOSE_WAIT`;
- never crashes (`ServiceDied`): the service stays up and logs no traceback (and `survives`
  checks its health after each test);
- answers in order (`NotItsAnswer`, `BrokenFraming`): the i-th final answer is the i-th
  request's; interim `1xx` answers are skipped between answers, but one inside an answer
  breaks its framing;
- answers or closes (`Unanswered`, `BadError`, `AnsweredAfterTheEnd`, `ClosedEarly`): every
  valid request before the first invalid item is answered, in order, and none closes a kept-
  alive connection; the invalid item gets at most one error answer — the service's JSON
  `{"error": "<message>"}`, 4xx or 502-505 (a 500 is a bug), with the status the contract
  fixes where it fixes one (400 malformed, 431 head over `maxHeaderKB`, 413 body over
  `maxBodyMB`, 505 version) — then the connection closes and nothing after it is answered.
  A request with `Connection: close`, or HTTP/1.0 without keep-alive, is the last answered.

Some items are invalid only in part: RFC 9112/9110 let a server either refuse them (400) or
serve them — obs-fold, or CR/NUL in a field value, replaced by SP; an identical duplicate
Content-Length; Content-Length with Transfer-Encoding, or HTTP/1.0 with Transfer-Encoding,
served as chunked and *then* the connection closed. Either outcome passes, but a served
answer must be the item's own (its marker, its body as sent).

A failure's message ends with the script (items, cuts, pauses, overlaps): hypothesis's own
"Failing test case" line shows empty argument values under this project's pytest.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from itertools import count
from typing import Callable, NoReturn

import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import MAX_BODY
from tests.fuzz.support import fuzz
from tests.integration.conftest import RunningService

WAIT = 10.0  # seconds any one wait on the socket may take (a send, a receive): more is a hang
EXAMPLE_BUDGET = 30.0  # seconds the answers to one script may take in all
CONTINUE_WAIT = 1.5  # seconds a client waiting for `100 Continue` waits before sending anyway
CLOSE_WAIT = 2.0  # seconds the connection may stay open after the last answer due (it is to close)
# Seconds between two pieces: long enough for the front to read them apart, or for it to be
# in the middle of an answer when the next piece comes.
PAUSES = (0.003, 0.003, 0.05)
MAX_HEAD = 64 << 10  # maxHeaderKB's default (64 KiB): the request line and fields together

# --------------------------------------------------------------------------- answers


class Malformed(Exception):
    """Bytes from the service that are not a well-formed HTTP/1.x answer where one should be."""


@dataclass
class Reply:
    version: str  # "1.0" or "1.1"
    status: int
    headers: dict[str, str]  # names lower-cased; repeated ones joined with ", "
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx answers that came just before it
    close_delimited: bool = False

    def tokens(self, name: str) -> set[str]:
        return {token.strip().lower() for token in self.headers.get(name, "").split(",") if token.strip()}

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers.get('content-type', '')} {self.body[:160]!r}>"


_STATUS_LINE = re.compile(r"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


def read_reply(data: bytes, pos: int, *, head_only: bool) -> tuple[Reply | None, int]:
    """The next final answer from ``pos`` (interim ones skipped) and where it ends; None if
    the data ends there. Raises `Malformed` on bytes that are not an answer or one cut short."""
    interim: list[int] = []
    while True:
        if pos >= len(data):
            if interim:
                raise Malformed(f"interim answers {interim} and then no final answer")
            return None, pos
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise Malformed(f"an answer head cut short or garbage at byte {pos}: {data[pos:pos + 300]!r}")
        lines = data[pos:end].decode("latin-1").split("\r\n")
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise Malformed(f"not a status line at byte {pos}: {data[pos:pos + 300]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise Malformed(f"bad header line {line!r} in {data[pos:end][:300]!r}")
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        pos = end + 4
        status = int(status_line[2])
        if status == 101:
            raise Malformed("101 Switching Protocols: no request here asked for an upgrade")
        if status >= 200:
            break
        interim.append(status)
    reply = Reply(f"1.{status_line[1]}", status, headers, b"", interim)
    if head_only or status in (204, 304):
        return reply, pos
    if "chunked" in reply.tokens("transfer-encoding"):
        body = bytearray()
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                raise Malformed(f"chunk size line cut short: {data[pos:pos + 100]!r}")
            size_text = data[pos:eol].split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise Malformed(f"bad chunk size line {data[pos:eol][:100]!r} (body so far {bytes(body[:200])!r})")
            size, pos = int(size_text, 16), eol + 2
            if size == 0:
                while True:  # trailer fields, up to an empty line
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        raise Malformed("trailer section cut short")
                    line, pos = data[pos:eol], eol + 2
                    if not line:
                        reply.body = bytes(body)
                        return reply, pos
            if len(data) < pos + size + 2:
                raise Malformed(f"a chunk of {size} bytes cut short after {len(data) - pos}")
            if data[pos + size:pos + size + 2] != b"\r\n":
                raise Malformed(f"no CRLF after a chunk: {data[pos + size:pos + size + 60]!r}")
            body += data[pos:pos + size]
            pos += size + 2
    if "content-length" in headers:
        if not headers["content-length"].isdigit():
            raise Malformed(f"Content-Length {headers['content-length']!r}")
        size = int(headers["content-length"])
        if len(data) - pos < size:
            raise Malformed(f"a body of {size} bytes cut short after {len(data) - pos}: {data[pos:pos + 200]!r}")
        reply.body = data[pos:pos + size]
        return reply, pos + size
    reply.body, reply.close_delimited = data[pos:], True  # up to the end of the connection
    return reply, len(data)


def announces_close(reply: Reply, request_version: str) -> bool:
    """Whether the answer says the connection ends after it."""
    connection = reply.tokens("connection")
    if "close" in connection or reply.close_delimited:
        return True
    return (reply.version == "1.0" or request_version == "1.0") and "keep-alive" not in connection


def error_problem(reply: Reply, statuses: frozenset[int] | None) -> str | None:
    """What is wrong with ``reply`` as the service's own error answer (None: nothing)."""
    if statuses is not None and reply.status not in statuses:
        return f"status {reply.status}, expected one of {sorted(statuses)}"
    if not (400 <= reply.status < 500 or reply.status in (502, 503, 504, 505)):
        return f"status {reply.status} is not an error the service may give (4xx, 502-505)"
    if "x-upstream-name" in reply.headers:
        return "an upstream answered it: the service forwarded a request it should have refused"
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return f"error of type {reply.headers.get('content-type')!r}, not JSON"
    try:
        payload = json.loads(reply.body)
    except ValueError:
        return "error body is not JSON"
    if not (isinstance(payload, dict) and list(payload) == ["error"]
            and isinstance(payload["error"], str) and payload["error"].strip()):
        return 'error body is not {"error": "<message>"}'
    return None


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


Check = Callable[[Reply], "str | None"]  # what is wrong with a reply as an item's own answer


def served_as_echo(model: str, method: str, tag: int, body: bytes | None) -> Check:
    """The fake upstream's `/echo` answer to this very request."""
    def check(reply: Reply) -> str | None:
        if reply.status != 200:
            return f"status {reply.status}"
        if reply.headers.get("x-upstream-name") != model:
            return f"not from upstream {model} ({reply.headers.get('x-upstream-name')})"
        if method == "HEAD":
            return None if not reply.close_delimited else "a HEAD answer with a close-delimited body"
        doc = _json(reply.body)
        if not isinstance(doc, dict):
            return "not the echo's JSON"
        if doc.get("query_string") != f"m={tag}":
            return f"the answer to {doc.get('query_string')!r}, not to 'm={tag}'"
        if doc.get("method") != method:
            return f"the answer to a {doc.get('method')}, not to a {method}"
        if body is not None and doc.get("body_sha256") != hashlib.sha256(body).hexdigest():
            return f"the upstream got a body of {doc.get('body_len')} bytes, not the {len(body)} sent"
        return None
    return check


def served_as_chat(model: str, prompt_tokens: int, stream: bool) -> Check:
    """A chat completion from ``model`` counting ``prompt_tokens`` (the marker)."""
    def check(reply: Reply) -> str | None:
        if reply.status != 200:
            return f"status {reply.status}"
        if reply.headers.get("x-upstream-name") != model:
            return f"not from upstream {model} ({reply.headers.get('x-upstream-name')})"
        if stream:
            events = [line[6:] for line in reply.body.split(b"\n") if line.startswith(b"data: ")]
            if not events or events[-1] != b"[DONE]":
                return "a stream that does not end with [DONE]"
            last = _json(events[-2]) if len(events) > 1 else None
            counted = last.get("timings", {}).get("prompt_n") if isinstance(last, dict) else None
        else:
            doc = _json(reply.body)
            if not isinstance(doc, dict) or not doc.get("choices"):
                return "not a chat completion"
            counted = (doc.get("usage") or {}).get("prompt_tokens")
        if counted != prompt_tokens:
            return f"the answer to a prompt of {counted} tokens, not {prompt_tokens}"
        return None
    return check


def served_as_health(reply: Reply) -> str | None:
    doc = _json(reply.body)
    ok = reply.status == 200 and isinstance(doc, dict) and doc.get("status") == "ok" and "models" in doc
    return None if ok else "not the answer to GET /health"


def served_as_running(reply: Reply) -> str | None:
    doc = _json(reply.body)
    ok = reply.status == 200 and isinstance(doc, dict) and isinstance(doc.get("running"), list)
    return None if ok else "not the answer to GET /running"


def served_as_head(reply: Reply) -> str | None:
    bad = reply.status != 200 or "x-upstream-name" in reply.headers or reply.close_delimited
    return "not the answer to HEAD /health" if bad else None


# --------------------------------------------------------------------------- scripts


class Item:
    """One request (or not-quite-request) of a script, and what may come back for it.

    fate: "valid" (answered by `check`), "invalid" (an error in `statuses`, or a bare close
    when `may_close`), or "either" (served as `check` says, or refused like an invalid one).
    closes: whether the connection ends after it is served (None: it may or may not).
    body_at: where the body starts, when the client waits for `100 Continue` before it.
    """

    def __init__(self, kind: str, data: bytes, *, fate: str = "valid", check: Check | None = None,
                 method: str = "GET", version: str = "1.1", closes: bool | None = False,
                 statuses: frozenset[int] | None = None, may_close: bool = False,
                 body_at: int | None = None) -> None:
        self.kind, self.data, self.fate, self.check = kind, data, fate, check
        self.method, self.version, self.closes = method, version, closes
        self.statuses, self.may_close = statuses, may_close
        self.body_at = body_at

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 400 else self.data[:300] + b"..." + self.data[-60:]
        size = f" ({len(self.data)} bytes)" if len(self.data) > 400 else ""
        wait = f" waits for 100 at {self.body_at}" if self.body_at is not None else ""
        return f"{self.kind}[{self.fate}{wait}]: {shown!r}{size}"


@dataclass
class Script:
    items: list[Item]
    cuts: list[int]  # offsets in the concatenated bytes where a new piece starts
    pauses: dict[int, float]  # those of the cuts before which the client pauses, and how long
    overlaps: list[int]  # items after which the client waits for answer bytes before sending on

    @property
    def stream(self) -> bytes:
        return b"".join(item.data for item in self.items)

    def starts(self) -> list[int]:
        """Where each item starts in the stream (and, last, where the stream ends)."""
        out = [0]
        for item in self.items:
            out.append(out[-1] + len(item.data))
        return out

    def continues(self) -> dict[int, int]:
        """Offset of each body sent only after `100 Continue` -> the item it is the body of."""
        return {start + item.body_at: index for index, (item, start) in enumerate(zip(self.items, self.starts()))
                if item.body_at is not None}

    def turn_came(self, index: int, data: bytes) -> bool:
        """Whether, in ``data``, the answers to the items before ``index`` are all in and
        something more has begun: item ``index``'s `100 Continue` (or its final answer)."""
        pos = 0
        for item in self.items[:index]:
            try:
                reply, pos = read_reply(data, pos, head_only=item.method == "HEAD")
            except Malformed:
                return False
            if reply is None or reply.close_delimited:
                return False
        return pos < len(data)


HOST_NAMES = [b"Host", b"host", b"HOST"]
EXTRA_FIELDS = [b"Accept: */*", b"User-Agent: fuzz/1.0", b"Accept-Encoding: identity", b"X-Fuzz: a b  c"]
EXTENSIONS = [b"", b"", b";ext", b";a=b", b';q="x y"', b";a=1;b=2", b";Ext-Name=Tok_en"]
TRAILERS = [b"", b"", b"X-Trailer: 1\r\n", b"X-Trailer: 1\r\nX-Other: two\r\n"]


def head(request_line: bytes, fields: list[bytes]) -> bytes:
    return request_line + b"\r\n" + b"".join(line + b"\r\n" for line in fields) + b"\r\n"


@st.composite
def chunked_bodies(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in 1-4 chunks, with chunk extensions, odd-cased hex sizes and maybe trailers."""
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=3, unique=True))) if body else []
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if body[a:b]]
    out = b""
    for part in parts:
        size = draw(st.sampled_from([b"%x", b"%X", b"0%x"])) % len(part)
        out += size + draw(st.sampled_from(EXTENSIONS)) + b"\r\n" + part + b"\r\n"
    return out + b"0" + draw(st.sampled_from(EXTENSIONS)) + b"\r\n" + draw(st.sampled_from(TRAILERS)) + b"\r\n"


def _fields(draw: st.DrawFn) -> list[bytes]:
    """A Host and a few harmless fields, in any order."""
    fields = draw(st.lists(st.sampled_from(EXTRA_FIELDS), max_size=2, unique=True))
    host = draw(st.sampled_from(HOST_NAMES)) + b": " + draw(st.sampled_from([b"fuzz.test", b"127.0.0.1:8080"]))
    fields.insert(draw(st.integers(0, len(fields))), host)
    return fields


small_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, b: b * n, st.integers(4_000, 150_000), st.binary(min_size=1, max_size=3)),
)


VALID_KINDS = ("echo-post", "echo-chunked", "chat", "chat", "echo-get", "echo-head", "health", "health-head",
               "running", "http/1.0")  # chat twice: the front's own lane, where most of its logic is


@st.composite
def valid_items(draw: st.DrawFn, tag: int, closing: bool, kinds: tuple[str, ...] = VALID_KINDS) -> Item:
    """A request the service serves, marked with ``tag``; the last one if ``closing``."""
    kind = draw(st.sampled_from(kinds))
    fields = _fields(draw)
    if closing:
        fields.append(draw(st.sampled_from([b"Connection: close", b"connection: Close", b"Connection: keep-alive, close"])))
    model = draw(st.sampled_from(["alpha", "beta"]))
    echo = b"/upstream/%s/echo?m=%d" % (model.encode(), tag)

    if kind in ("health", "health-head", "running", "echo-get", "echo-head"):
        method = "HEAD" if kind.endswith("-head") else "GET"
        target = b"/running" if kind == "running" else echo if kind.startswith("echo") else b"/health"
        check = {"health": served_as_health, "health-head": served_as_head, "running": served_as_running}.get(kind)
        return Item(kind, head(method.encode() + b" " + target + b" HTTP/1.1", fields), method=method,
                    check=check or served_as_echo(model, method, tag, None), closes=closing)

    if kind == "http/1.0":  # no Host needed; kept alive only when it asks
        method = draw(st.sampled_from(["GET", "POST"]))
        fields = draw(st.lists(st.sampled_from(EXTRA_FIELDS), max_size=1))
        if not closing:
            fields.append(draw(st.sampled_from([b"Connection: keep-alive", b"connection: Keep-Alive"])))
        body = draw(st.binary(max_size=100)) if method == "POST" else b""
        if method == "POST":
            fields.append(b"Content-Length: %d" % len(body))
        return Item(kind, head(method.encode() + b" " + echo + b" HTTP/1.0", fields) + body, method=method,
                    version="1.0", check=served_as_echo(model, method, tag, body if method == "POST" else None),
                    closes=closing)

    if kind == "chat":
        stream = draw(st.booleans())
        messages = [{"role": "user", "content": "x" * (4 * tag)}]  # the marker: the prompt's token count
        document = {"model": model, "messages": messages, "stream": stream}
        if stream and draw(st.booleans()):  # an answer spread over time, for the next request to overtake
            document.update(n_chunks=3, chunk_delay=draw(st.sampled_from([0.01, 0.03])))
        body = json.dumps(document).encode()
        prompt_tokens = max(1, len(json.dumps(messages, sort_keys=True)) // 4)  # as the fake upstream counts
        target, check = b"/v1/chat/completions", served_as_chat(model, prompt_tokens, stream)
        fields.append(b"Content-Type: application/json")
        chunked = draw(st.booleans())
    else:
        body = b"%d:" % tag + draw(small_bodies)
        target, check = echo, served_as_echo(model, "POST", tag, body)
        fields.append(b"Content-Type: application/octet-stream")
        chunked = kind == "echo-chunked"
    if chunked:
        fields.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked"])))
        payload = draw(chunked_bodies(body))
    else:
        fields.append(draw(st.sampled_from([b"Content-Length", b"content-length"])) + b": %d" % len(body))
        payload = body
    expect = draw(st.sampled_from([None, None, "wait", "at once"]))
    if expect:
        fields.append(b"Expect: 100-continue")
    request_head = head(b"POST " + target + b" HTTP/1.1", fields)
    return Item(f"{kind}{' expect (' + expect + ')' if expect else ''}", request_head + payload, method="POST",
                check=check, closes=closing,
                body_at=len(request_head) if expect == "wait" and payload else None)


def closing_request(tag: int) -> Item:
    """Every script ends with it, so every connection must end with an EOF."""
    data = b"GET /upstream/alpha/echo?m=%d HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n" % tag
    return Item("last", data, check=served_as_echo("alpha", "GET", tag, None), closes=True)


ANY_ERROR = None
BAD_REQUEST = frozenset({400})
# (Lines a lenient parser may read on whitespace boundaries — doubled or leading spaces, tabs,
# a bare CR taken for SP — are left out: RFC 9112 3 lets it, and then they are valid.)
BAD_REQUEST_LINES = [
    b"GET", b"GET /", b"GET / HTTP/1.1 extra", b"G\x00T / HTTP/1.1", b"GET /a\x00b HTTP/1.1", b"GET /a b HTTP/1.1",
    b"GET / HTTP/1.x", b"GET / http/1.1", b"GET / HTTP/1", b"GET / HTTP/11.1", b"GET / HTTP/1.1\x00",
    b"GET / XTTP/1.1", b"GET\x7f / HTTP/1.1", b"\xffGET / HTTP/1.1", b"GET /health HTTP/", b"/health HTTP/1.1",
]
BAD_FIELDS = [b"Bad Name: x", b"X-Spaced : x", b": no-name", b"NoColonHere", b"X(A): v", b"X\x00A: v", b"X\x7fA: v",
              b"\xffX: v", b"X@Y: v", b"X/Y: v", b"X{}: v", b'X"A": v']
# A field value with a CR, LF or NUL: refused, or the character replaced by SP (RFC 9110 5.5);
# other control characters are invalid too and may be treated alike.
ODD_VALUES = [b"X-Odd: a\x00b", b"X-Odd: \x00", b"X-Odd: a\rb", b"X-Odd: a\nb", b"X-Odd: a\x01b", b"X-Odd: a\x7fb"]
OBS_FOLDS = [b"X-Fold: a\r\n b", b"X-Fold: a\r\n\tb", b"X-Fold: a\r\n  b\r\n  c"]
BAD_LENGTHS = [[b"Content-Length: %d", b"Content-Length: %d1"], [b"Content-Length: %d, 7%d"], [b"Content-Length: -1"],
               [b"Content-Length: +%d"], [b"Content-Length: 0x%d"], [b"Content-Length: %d %d"], [b"Content-Length: 1e3"],
               [b"Content-Length:"], [b"Content-Length: %da"], [b"Content-Length: 99999999999999999999999"]]
SAME_LENGTHS = [[b"Content-Length: %d", b"Content-Length: %d"], [b"Content-Length: %d, %d"], [b"Content-Length: %d,%d"]]
BAD_CODINGS = [[b"Transfer-Encoding: chunked, gzip"], [b"Transfer-Encoding: gzip"], [b"Transfer-Encoding: chunked, chunked"],
               [b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"], [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"]]
BAD_CHUNKS = [b"zz\r\nabc\r\n", b"-1\r\nabc\r\n", b"0x3\r\nabc\r\n", b"\r\nabc\r\n", b"fffffffffffffffffffff\r\nabc\r\n",
              b"3 3\r\nabc\r\n", b"3;\x00\r\nabc\r\n", b"3\r\nabcXY\r\n", b"3\nabc\n", b"3\r\nabc", b"g\r\n"]
VERSIONS = [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9", b"HTTP/9.9"]
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


INVALID_KINDS = ("garbage", "request line", "field name", "field value", "obs-fold", "content-length",
                 "same content-length", "length and chunked", "coding", "chunk size", "head too large",
                 "body too large", "http/1.0 chunked", "host", "version", "h2 preface")


@st.composite
def invalid_items(draw: st.DrawFn, tag: int, kinds: tuple[str, ...] = INVALID_KINDS) -> Item:
    """Something that is not (quite) a request, with what the service may answer to it."""
    kind = draw(st.sampled_from(kinds))
    model = draw(st.sampled_from(["alpha", "beta"]))
    line = b"POST /upstream/%s/echo?m=%d HTTP/1.1" % (model.encode(), tag)
    body = b"%d:" % tag + draw(st.binary(max_size=60))
    fields = _fields(draw) + [b"Content-Type: application/octet-stream"]
    served = served_as_echo(model, "POST", tag, body)
    with_length = fields + [b"Content-Length: %d" % len(body)]

    def spliced(bad: list[bytes]) -> list[bytes]:
        at = draw(st.integers(0, len(fields)))
        return fields[:at] + bad + fields[at:]

    if kind == "garbage":  # a NUL makes sure it is not a request, whatever the bytes around it
        data = draw(st.binary(min_size=1, max_size=64)) + b"\x00" + draw(st.binary(max_size=8))
        return Item(kind, data, fate="invalid", statuses=ANY_ERROR, may_close=True)
    if kind == "request line":
        data = head(draw(st.sampled_from(BAD_REQUEST_LINES)), [b"Host: fuzz.test"])
        return Item(kind, data, fate="invalid", statuses=frozenset({400, 505}), may_close=True)
    if kind == "field name":
        data = head(line, spliced([draw(st.sampled_from(BAD_FIELDS))]) + [b"Content-Length: %d" % len(body)]) + body
        return Item(kind, data, fate="invalid", statuses=BAD_REQUEST)
    if kind in ("field value", "obs-fold"):
        odd = draw(st.sampled_from(ODD_VALUES if kind == "field value" else OBS_FOLDS))
        data = head(line, spliced([odd]) + [b"Content-Length: %d" % len(body)]) + body
        return Item(kind, data, fate="either", check=served, method="POST", closes=None, statuses=BAD_REQUEST)
    if kind in ("content-length", "same content-length"):
        lengths = draw(st.sampled_from(BAD_LENGTHS if kind == "content-length" else SAME_LENGTHS))
        lengths = [template.replace(b"%d", b"%d" % len(body)) for template in lengths]
        data = head(line, spliced(lengths)) + body
        if kind == "content-length":  # (a length too large to be one may be 413)
            return Item(kind, data, fate="invalid", statuses=frozenset({400, 413}))
        return Item(kind, data, fate="either", check=served, method="POST", closes=None, statuses=BAD_REQUEST)
    if kind in ("length and chunked", "http/1.0 chunked"):
        payload = draw(chunked_bodies(body))
        if kind == "http/1.0 chunked":
            line, fields = line.replace(b"HTTP/1.1", b"HTTP/1.0"), fields + [b"Connection: keep-alive"]
            codings = [b"Transfer-Encoding: chunked"]
        else:
            length = draw(st.sampled_from([len(payload), len(body), 0, 3]))
            codings = [b"Content-Length: %d" % length, b"Transfer-Encoding: chunked"]
            codings = codings[::-1] if draw(st.booleans()) else codings
        data = head(line, spliced(codings)) + payload
        # served only as chunked, and the connection closed after the answer (RFC 9112 6.1, 6.3)
        return Item(kind, data, fate="either", check=served, method="POST", closes=True, statuses=BAD_REQUEST)
    if kind == "coding":  # chunked not the last coding (or twice): the length is unknowable, 400 (6.3)
        data = head(line, spliced(draw(st.sampled_from(BAD_CODINGS)))) + draw(chunked_bodies(body))
        return Item(kind, data, fate="invalid", statuses=BAD_REQUEST)
    if kind == "chunk size":  # the head is fine: the error comes after the request may be on its way
        good = draw(st.sampled_from([b"", b"2\r\nok\r\n"]))
        data = head(line, fields + [b"Transfer-Encoding: chunked"]) + good + draw(st.sampled_from(BAD_CHUNKS))
        return Item(kind, data, fate="invalid", statuses=ANY_ERROR, may_close=True)
    if kind == "head too large":
        excess = draw(st.integers(1, 16 << 10))
        how = draw(st.sampled_from(["one field", "many fields", "target"]))
        if how == "one field":
            big = [b"X-Big: " + b"b" * (MAX_HEAD + excess)]
        elif how == "many fields":
            big = [b"X-Big-%d: %s" % (i, b"b" * 2000) for i in range((MAX_HEAD + excess) // 2000 + 1)]
        else:
            big = []
            line = line.replace(b" HTTP/1.1", b"&pad=" + b"p" * (MAX_HEAD + excess) + b" HTTP/1.1")
        data = head(line, spliced(big) + [b"Content-Length: %d" % len(body)]) + body
        statuses = frozenset({431, 414}) if how == "target" else frozenset({431})
        return Item(f"{kind} ({how})", data, fate="invalid", statuses=statuses)
    if kind == "body too large":
        if draw(st.booleans()):  # refused by its announced length, before the body
            data = head(line, fields + [b"Content-Length: %d" % (MAX_BODY + draw(st.integers(1, 1 << 20)))])
            data += draw(st.binary(max_size=100))
        else:  # chunked: refused once the limit is passed
            big = b"z" * (MAX_BODY + draw(st.integers(1, 5000)))
            data = head(line, fields + [b"Transfer-Encoding: chunked"])
            data += b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536])
                             for i in range(0, len(big), 65536)) + b"0\r\n\r\n"
        return Item(kind, data, fate="invalid", statuses=frozenset({413}))
    if kind == "host":  # HTTP/1.1 needs exactly one Host (RFC 9112 3.2)
        without = [f for f in with_length if not f.lower().startswith(b"host:")]
        if draw(st.booleans()):
            data = head(line, without) + body
        else:
            data = head(line, [b"Host: one.test", *without, b"Host: two.test"]) + body
        return Item(kind, data, fate="invalid", statuses=BAD_REQUEST)
    if kind == "version":
        data = head(line.replace(b"HTTP/1.1", draw(st.sampled_from(VERSIONS))), with_length) + body
        return Item(kind, data, fate="invalid", statuses=frozenset({505}))
    assert kind == "h2 preface"
    data = H2_PREFACE + draw(st.sampled_from([b"", H2_SETTINGS]))
    return Item(kind, data, fate="invalid", statuses=frozenset({400, 505}), may_close=True)


@st.composite
def scripts(draw: st.DrawFn, *, invalid: bool, valid_kinds: tuple[str, ...] = VALID_KINDS,
            invalid_kinds: tuple[str, ...] = INVALID_KINDS, closing_odds: int = 10) -> Script:
    """0-4 valid requests, then (``invalid``) one invalid item and 0-2 more requests, and the
    closing request; one in ``closing_odds`` valid requests before the end closes the
    connection itself (0: none)."""
    tags = count(1)
    items = []
    for _ in range(draw(st.integers(0, 4))):
        closing = closing_odds > 0 and draw(st.integers(1, closing_odds)) == 1
        items.append(draw(valid_items(next(tags), closing, valid_kinds)))
    if invalid:
        items.append(draw(invalid_items(next(tags), invalid_kinds)))
        items += [draw(valid_items(next(tags), False, valid_kinds)) for _ in range(draw(st.integers(0, 2)))]
    items.append(closing_request(next(tags)))
    size = sum(len(item.data) for item in items)
    cuts = sorted(draw(st.lists(st.integers(1, size - 1), max_size=8, unique=True)))
    pauses = {cut: draw(st.sampled_from(PAUSES)) for cut in cuts if draw(st.booleans())}
    overlaps = [index for index in range(len(items) - 1) if draw(st.integers(0, 3)) == 0]
    return Script(items, cuts, pauses, overlaps)


# --------------------------------------------------------------------------- the wire


class Receiver(threading.Thread):
    """Reads the connection to its end (EOF, reset, or a wait over `WAIT`) while the script
    is being sent, so neither side can block the other."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.data = bytearray()
        self.end = ""  # "eof", "reset", "timeout" or "over budget"
        self.changed = threading.Condition()

    def run(self) -> None:
        deadline = time.monotonic() + EXAMPLE_BUDGET
        end = "over budget"
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    end = "eof"
                    break
                with self.changed:
                    self.data += chunk
                    self.changed.notify_all()
        except socket.timeout:
            end = "timeout"
        except OSError as exc:  # reset: the service closed with bytes of ours unread
            end = f"reset ({exc.__class__.__name__})"
        with self.changed:
            self.end = end
            self.changed.notify_all()

    def wait_for_continue(self, script: Script, index: int) -> bool:
        """Wait until item ``index``'s `100 Continue` came (or the connection ended)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: self.end or script.turn_came(index, bytes(self.data)), timeout=CONTINUE_WAIT)

    def wait_for_more(self, than: int) -> bool:
        """Wait until more than ``than`` bytes came (or the connection ended)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.end or len(self.data) > than, timeout=CONTINUE_WAIT)

    @property
    def received(self) -> int:
        with self.changed:
            return len(self.data)


def run_script(svc: RunningService, script: Script) -> tuple[bytes, str, str]:
    """Send the script piece by piece on one connection; what came back, how the connection
    ended, and how sending ended."""
    host, port = svc.url.removeprefix("http://").rsplit(":", 1)
    stream = script.stream
    continues = script.continues()
    starts = script.starts()
    overlaps = {starts[index + 1]: starts[index] for index in script.overlaps}  # next item -> the one before
    points = sorted({*starts, *script.cuts, *continues})
    received_at: dict[int, int] = {}  # item start -> bytes received when the client began sending it
    sent = "all sent"
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        receiver = Receiver(sock)
        receiver.start()
        for start, end in zip(points, points[1:]):
            if start in starts:
                received_at[start] = receiver.received
            if start in continues and not receiver.wait_for_continue(script, continues[start]):
                event("sent a body without its 100 Continue (none came in time)")
            if start in overlaps and not receiver.wait_for_more(received_at[overlaps[start]]):
                event("sent the next request without waiting for an answer to begin (none came in time)")
            if start in script.pauses:
                time.sleep(script.pauses[start])
            try:
                sock.sendall(stream[start:end])
            except socket.timeout:
                sent = f"sending stalled for {WAIT} s at byte {start} of {len(stream)}"
                break
            except OSError as exc:  # closed by the service: what it answered says whether rightly
                sent = f"closed by the service at byte {start} of {len(stream)} ({exc.__class__.__name__})"
                break
        end = read_to_the_end(receiver, script, sent)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # ends the receiver's recv, if it still waits
        except OSError:
            pass
    receiver.join(WAIT)
    with receiver.changed:
        return bytes(receiver.data), end, sent


# One exception class per property, so that hypothesis reports (and shrinks) a failing script
# for each property that fails rather than one for them all.
class ServiceDied(AssertionError):
    """The service's process ended, or it logged a traceback."""


class Hang(AssertionError):
    """The service neither answered nor closed within `WAIT` (or stopped reading)."""


class NotItsAnswer(AssertionError):
    """An answer that is not its request's: out of order, or another's."""


class Unanswered(AssertionError):
    """A valid request before anything that ends the connection got no answer."""


class BadError(AssertionError):
    """The invalid item's answer: not an error, not the service's JSON error, a 500, or none
    where the item must get one."""


class AnsweredAfterTheEnd(AssertionError):
    """Something answered after what ends the connection (an error, `Connection: close`)."""


class ClosedEarly(AssertionError):
    """The service ended a kept-alive connection after answering a request that kept it."""


class BrokenFraming(AssertionError):
    """Bytes that are not well-formed answers (an interim answer inside another, a bad
    status line, a body cut short)."""


class Pending(Exception):
    """(Judging what has come so far:) more is to come before the answers can be judged."""


def judge(script: Script, data: bytes, end: str, sent: str, *, partial: bool = False) -> None:
    """The properties: answers in order, each its request's; the invalid item's at most one
    error; nothing after what ends the connection; the connection ends.

    ``partial``: ``data`` is what came so far, the connection still open: raises `Pending` if
    more must come, a property's exception if what came is already wrong, and returns if
    every answer due is in (only the end of the connection is missing)."""
    ended = partial or end == "eof" or end.startswith("reset")

    def fail(kind: type[AssertionError], problem: str) -> NoReturn:
        if not ended and kind in (Unanswered, BrokenFraming):  # waiting for what never came
            kind, problem = Hang, f"no EOF within {WAIT} s ({end}): {problem}"
        raise kind(f"{problem}\n  connection: {end}; sending: {sent}\n  answers: {replies}\n"
                   f"  received ({len(data)} bytes): {data[:1500]!r}")

    replies: list[Reply] = []
    if sent.startswith("sending stalled"):
        fail(Hang, sent)
    pos = 0
    for index, item in enumerate(script.items):
        where = f"item {index} ({item.kind})"
        try:
            reply, pos = read_reply(data, pos, head_only=item.method == "HEAD")
        except Malformed as exc:
            if partial:  # (perhaps only cut short)
                raise Pending from None
            fail(BrokenFraming, f"{where}: malformed answer: {exc}")
        if partial and (reply is None or reply.close_delimited):
            raise Pending
        if reply is not None:
            replies.append(reply)
        if item.fate == "valid":
            if reply is None:
                fail(Unanswered, f"{where} was not answered: the connection ended first")
            problem = item.check(reply)
            if problem:
                fail(NotItsAnswer, f"{where}: answer #{len(replies)} is not its own: {problem}: {reply}")
            if item.closes:
                event("a request ended the connection" if index < len(script.items) - 1 else "script ended")
                break
            if announces_close(reply, item.version):
                fail(ClosedEarly, f"{where}: the service ended a kept-alive connection after answering it")
            continue
        # the invalid (or partly invalid) item
        if reply is None:
            if not item.may_close:
                fail(BadError, f"{where}: the connection ended without an error answer")
            event(f"{item.kind}: closed without an answer")
            break
        if item.fate == "either" and item.check(reply) is None:
            event(f"{item.kind}: served")
            if item.closes is True or (item.closes is None and announces_close(reply, item.version)):
                break
            continue
        problem = error_problem(reply, item.statuses)
        if problem:
            fail(BadError, f"{where}: not an acceptable error answer: {problem}: {reply}")
        event(f"{item.kind}: {reply.status}")
        break
    if pos < len(data):
        fail(AnsweredAfterTheEnd, f"bytes after the last answer allowed (item {index}, {script.items[index].kind}): "
                                  f"{data[pos:pos + 400]!r}")
    if not ended:
        fail(Hang, f"the connection did not end after item {index} ({script.items[index].kind}): {end}")


def read_to_the_end(receiver: Receiver, script: Script, sent: str) -> str:
    """Wait for the connection to end, and say how it ended; but once every answer due has
    come, wait no more than `CLOSE_WAIT` for the end, and once what came is already wrong,
    no more at all."""
    deadline = time.monotonic() + EXAMPLE_BUDGET
    seen, since, verdict = -1, 0.0, "pending"
    while time.monotonic() < deadline:
        with receiver.changed:
            receiver.changed.wait_for(lambda: receiver.end or len(receiver.data) != seen, timeout=0.1)
            if receiver.end:
                return receiver.end
            data = bytes(receiver.data)
        if len(data) != seen:
            seen, since = len(data), time.monotonic()
            try:
                judge(script, data, "open", sent, partial=True)
                verdict = "complete"
            except Pending:
                verdict = "pending"
            except AssertionError:
                return "still open, after answers already wrong"
        elif verdict == "complete" and time.monotonic() - since > CLOSE_WAIT:
            return f"still open {CLOSE_WAIT} s after the last answer due"
    return "over budget"


def check_script(svc: RunningService, script: Script) -> None:
    log_start = svc.log_path.stat().st_size
    data, end, sent = run_script(svc, script)
    if svc.proc.poll() is not None:
        raise ServiceDied(f"the service exited with {svc.proc.returncode}:\n{svc.log()[-3000:]}\nscript: {script!r}")
    try:
        judge(script, data, end, sent)
        with open(svc.log_path, "rb") as log:  # (`survives` looks again, later, at the whole test's)
            log.seek(log_start)
            logged = log.read().decode("utf-8", "replace")
        if "Traceback" in logged or "unhandled error" in logged:
            raise ServiceDied(f"the service logged an error it did not handle:\n{logged[-3000:]}")
    except AssertionError as exc:
        # the script in the message: hypothesis's own report of it is not always readable
        exc.add_note(f"script: {script!r}")
        raise


# --------------------------------------------------------------------------- tests


# A passing run takes well under a minute; a failing one also shrinks its scripts, which
# hypothesis bounds at five minutes: the project's 120 s per test would cut its report off.
pytestmark = pytest.mark.timeout(600)


def front_fuzz(max_examples: int) -> settings:
    """`fuzz`, without the explain phase: it reruns a failing script dozens of times, and a
    script that hangs costs `WAIT` each time."""
    return settings(fuzz(max_examples), phases=[phase for phase in Phase if phase is not Phase.explain])


@front_fuzz(150)
@given(script=scripts(invalid=False))
def test_valid_requests_split_anywhere(svc: RunningService, script: Script) -> None:
    """Pipelined valid requests of every framing (Content-Length, chunked with extensions and
    trailers, `Expect: 100-continue` waited for or not, HTTP/1.0 kept alive or not, HEAD),
    cut anywhere: every one answered, in order, by its own answer; then the connection ends."""
    check_script(svc, script)


@front_fuzz(60)
@given(script=scripts(invalid=False, valid_kinds=("chat", "chat", "echo-post"), closing_odds=0))
def test_fast_lane_pipelines(svc: RunningService, script: Script) -> None:
    """Chat requests (the fast lane's) pipelined, some streamed slowly and some expecting
    `100 Continue`, the next sent while an answer is on its way: no interim answer lands
    inside another answer, and every answer is its request's."""
    check_script(svc, script)


@front_fuzz(300)
@given(script=scripts(invalid=True))
def test_one_invalid_item_split_anywhere(svc: RunningService, script: Script) -> None:
    """Valid requests, one invalid item, more requests: those before it answered in order,
    it at most one JSON error (then the close), nothing after it."""
    check_script(svc, script)
