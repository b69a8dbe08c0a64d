"""Access control: API keys, secrets kept out of logs, and request-target checks.

`apiKeys` (llama-swap's own key, as the Go version reads it): a key comes from
`Authorization: Basic` (the password; any user name), `Authorization: Bearer`, or
`x-api-key`, in that order — the first one present is the one checked. It is compared
in constant time against every configured key. A failure is a 401 with
`WWW-Authenticate: Basic realm="llama-swap"`, so a browser opening the web UI asks for
the key once and sends it (as Basic) with every same-origin request after that.

Open without a key: `GET /health`, `GET /wol-health`, the `GET /` redirect,
`GET /favicon.ico` and CORS preflights. Everything else needs one.

Unless `forwardApiKeys` is set, the headers that carried the key are not sent on to the
upstream. Secrets never reach a log line (see `llama_swap.redact`); malformed requests,
whose bytes aiohttp would quote, headers included, are logged without their bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import re
from typing import Mapping, Sequence
from urllib.parse import unquote

from aiohttp import http_exceptions, web

from llama_swap.server.responses import error_response

REALM = 'Basic realm="llama-swap"'
UNAUTHORIZED = "unauthorized: invalid or missing API key"

# Plain routes open without a key, for GET (and HEAD). Matched on the route that was
# resolved, not on the path: `POST /health` reaches the catch-all proxy route and needs one.
OPEN_ROUTES = frozenset({"/health", "/wol-health", "/", "/favicon.ico"})


# --------------------------------------------------------------------------- keys


def presented_key(headers: Mapping[str, str]) -> tuple[bytes, str] | None:
    """The key a request presents and where it came from (`basic`, `bearer`, `x-api-key`).

    The Go version's order: the first non-empty of the Basic password, the Bearer token and
    `x-api-key` is the presented key (a wrong Bearer token is not rescued by a right
    `x-api-key`). The scheme name is case-insensitive (RFC 9110 §11.1).
    """
    authorization = headers.get("Authorization", "").strip()
    scheme, _, credentials = authorization.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "basic" and credentials:
        password = _basic_password(credentials)
        if password:
            return password, "basic"
    elif scheme == "bearer" and credentials:
        return _raw(credentials), "bearer"
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return _raw(api_key), "x-api-key"
    return None


def _basic_password(credentials: str) -> bytes | None:
    """The password of `user:password`, base64 encoded; None if malformed."""
    try:
        decoded = base64.b64decode(_raw(credentials), validate=True)
    except (binascii.Error, ValueError):
        return None
    _user, colon, password = decoded.partition(b":")
    return password if colon else None


def _raw(value: str) -> bytes:
    """A header value as the bytes on the wire (aiohttp decodes them as UTF-8, surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=8)
def key_digests(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    """SHA-256 of each configured key: compared digests all have one length."""
    return tuple(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest() for key in keys)


def key_matches(presented: bytes | None, digests: Sequence[bytes]) -> bool:
    """Whether ``presented`` is one of the keys, in time independent of which one and where
    it differs: its digest is compared against every key's, without stopping at a match."""
    digest = hashlib.sha256(presented or b"").digest()
    matched = False
    for key in digests:
        matched |= hmac.compare_digest(digest, key)
    return matched and bool(presented)


def is_open(request: web.Request) -> bool:
    """Endpoints anyone may call: health checks, the root redirect, the favicon, preflights."""
    if request.method not in ("GET", "HEAD"):
        return False
    resource = request.match_info.route.resource
    return isinstance(resource, web.PlainResource) and resource.canonical in OPEN_ROUTES


def check_key(request: web.Request, keys: Sequence[str]) -> web.Response | None:
    """None if ``request`` may pass, else the 401 to send."""
    found = presented_key(request.headers)
    if not key_matches(found[0] if found else None, key_digests(tuple(keys))):
        return unauthorized()
    return None


# Headers not sent upstream once a key was accepted: `x-api-key` always (it is this
# service's key header), `Authorization` when it carried the key (another scheme, e.g.
# a token meant for the upstream, passes when the key came in `x-api-key`).
CARRIED_BY = {
    "basic": frozenset({"authorization", "x-api-key"}),
    "bearer": frozenset({"authorization", "x-api-key"}),
    "x-api-key": frozenset({"x-api-key"}),
}


def unauthorized() -> web.Response:
    return error_response(401, UNAUTHORIZED, {"WWW-Authenticate": REALM})


class QuietBadRequests(logging.Filter):
    """For the `aiohttp.server` logger: a request aiohttp could not parse is logged as one
    warning line, without the traceback whose message quotes the offending bytes — which
    may be an `Authorization` or `Cookie` header line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            record.msg = f"{record.getMessage()}: {type(exc).__name__} (HTTP {exc.code}); the request is not quoted"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


QUIET_BAD_REQUESTS = QuietBadRequests()


def quiet_bad_requests() -> None:
    """Install `QuietBadRequests` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if QUIET_BAD_REQUESTS not in logger.filters:
        logger.addFilter(QUIET_BAD_REQUESTS)


# --------------------------------------------------------------------------- request target


def target_problem(raw_path: str) -> str | None:
    """Why a request target cannot be proxied, or None when it is a plain path.

    Rejected: absolute-form targets (`GET http://host/...`), `.`/`..` segments (also
    percent-encoded, behind encoded slashes or backslashes, at any decoding depth: an
    upstream must never resolve them above the path it was given), and NUL or other
    control characters. The query string is not inspected: it never changes the path.
    """
    if not raw_path.startswith("/"):
        return "the request target must be a path starting with '/'"
    path = raw_path.split("?", 1)[0]
    if "." not in path and "%" not in path and "\\" not in path:
        return None  # the common case: nothing to decode
    seen = path
    for _ in range(4):  # upstreams decode once; refuse what any decoding depth would turn into `..`
        if _CONTROL.search(seen):
            return "the path must not contain NUL or control characters"
        if any(segment in (".", "..") for segment in _SEGMENT_SPLIT.split(seen)):
            return "the path must not contain '.' or '..' segments"
        decoded = unquote(seen, errors="surrogateescape")
        if decoded == seen:
            return None
        seen = decoded
    return "the path is encoded too many times"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEGMENT_SPLIT = re.compile(r"[/\\]")
