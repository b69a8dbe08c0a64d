"""What the fuzz tests share: hypothesis settings, a raw HTTP client and the service's properties.

Settings come from a hypothesis *profile* chosen by ``LLAMA_SWAP_FUZZ``:

- ``ci`` (the default): derandomized (the examples are a function of the test's source, so
  every run, CI's included, tries the same inputs) and without an example database (no
  ``.hypothesis/`` directory, nothing carried between runs); no deadline, since each example
  is a real HTTP exchange whose time depends on the machine's load.
- ``deep``: random and ten times the examples, for a developer hunting bugs locally
  (``LLAMA_SWAP_FUZZ=deep pytest tests/fuzz``). Still no database: a failure prints the
  ``@reproduce_failure`` blob to paste.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import unquote

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("LLAMA_SWAP_FUZZ", "ci")
if PROFILE not in ("ci", "deep"):
    raise RuntimeError(f"LLAMA_SWAP_FUZZ must be 'ci' or 'deep', not {PROFILE!r}")

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.filter_too_much]
settings.register_profile(
    "llama-swap-fuzz-ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "llama-swap-fuzz-deep", derandomize=False, database=None, deadline=None, print_blob=True,
    suppress_health_check=_QUIET,
)
_SCALE = 10 if PROFILE == "deep" else 1


def fuzz(max_examples: int) -> settings:
    """Settings for one property: the profile's, with this many examples (times ten when deep)."""
    return settings(settings.get_profile(f"llama-swap-fuzz-{PROFILE}"), max_examples=max_examples * _SCALE)


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes

    @property
    def from_upstream(self) -> bool:
        """Whether a fake upstream produced this answer (it marks every response it sends)."""
        return "x-upstream-name" in self.headers


def exchange(
    base_url: str,
    method: str,
    target: str | bytes,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    chunked: bool = False,
    timeout: float = 30.0,
) -> Answer:
    """One request over a fresh connection, sent byte for byte as given (no client normalises
    the target or the headers), `Connection: close`; the whole answer, de-chunked."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    if isinstance(target, str):
        target = target.encode("latin-1")
    head = method.encode("latin-1") + b" " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
    if chunked:
        head += b"Transfer-Encoding: chunked\r\n"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece)
                           for piece in (body[i:i + 65536] for i in range(0, len(body), 65536)))
        payload += b"0\r\n\r\n"
    else:
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            head += b"Content-Length: %d\r\n" % len(body)
        payload = body
    head += b"Connection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(head + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) and closed before the body was all sent: read the answer
        data = bytearray()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            if not data:
                raise
    return parse_answer(bytes(data), head_only=method == "HEAD")


def parse_answer(data: bytes, *, head_only: bool = False) -> Answer:
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"no complete answer: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if not 100 <= status < 200:
            break
        data = body  # an interim answer (`100 Continue`): the real one follows
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if head_only:
        body = b""
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Answer(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[line_end + 2 : line_end + 2 + size]
        pos = line_end + 2 + size + 2


# --------------------------------------------------------------------------- properties


def check_answer(answer: Answer, method: str, what: object) -> None:
    """The service's promises for any request, however odd:

    - no 5xx of its own: a 5xx is allowed only as an upstream's own answer (the fake
      upstreams mark theirs with `X-Upstream-Name`);
    - every error it produces (4xx/5xx not from an upstream) has the body
      `{"error": "<non-empty message>"}` as JSON — except to HEAD, which has no body.
    """
    context = f"{what!r:.300}: {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500 or answer.from_upstream, f"the service's own {answer.status}: {context}"
    if answer.status < 400 or answer.from_upstream or method == "HEAD":
        return
    assert answer.headers.get("content-type", "").startswith("application/json"), context
    try:
        payload = json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {context}") from None
    assert isinstance(payload, dict) and list(payload) == ["error"], context
    assert isinstance(payload["error"], str) and payload["error"].strip(), context


# Routes that answer with an endless stream (SSE events, live logs): a fuzzer must not open
# them, since the answer never ends. Matched as the router sees the path (percent-decoded once).
ENDLESS_PREFIXES = ("/api/events", "/logs/stream")


def opens_a_stream(method: str, target: str) -> bool:
    path = unquote(target.split("?", 1)[0], errors="surrogateescape")
    return method in ("GET", "HEAD") and path.startswith(ENDLESS_PREFIXES)


# Fake upstream routes with effects a fuzzer must not trigger: /slow sleeps, /control/...
# makes the upstream hang its health checks (the service would then restart it).
def reaches_fake_controls(target: str) -> bool:
    path = target.split("?", 1)[0]
    for _ in range(3):
        path = unquote(path, errors="surrogateescape")
    path = path.lower()
    return "/slow" in path or "/control" in path
