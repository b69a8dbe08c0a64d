"""Header rules on raw `(name, value)` byte pairs: the one place that says which fields pass
a hop, how forwarding is recorded, and what makes a request's head invalid.

The pairs are the bytes on the wire, as llhttp hands them over: decoding every field into a
multidict cost a request more than all the lookups it makes. Names are compared in lower
case; the first field of a repeated name wins where one value is read (`RawHeaders`), and
`X-Forwarded-For` lines are combined in order (RFC 9110 §5.3: repeated field lines are one
comma-separated list).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

RawFields = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1: fields that concern one connection, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Not sent upstream: hop-by-hop, and what the service sets itself for the upstream (its
# Host, the body's framing). `Expect` is dropped because the service has the whole body
# already (forwarding `100-continue` would make the upstream wait for a go-ahead).
REQUEST_DROP = HOP_BY_HOP | {b"expect", b"host", b"content-length"}
RESPONSE_DROP = HOP_BY_HOP

_XFF = b"x-forwarded-for"


def find(fields: RawFields, name: bytes) -> bytes | None:
    """The value of the first field called ``name`` (lower case), or None."""
    size = len(name)
    for found, value in fields:
        if len(found) == size and found.lower() == name:
            return value
    return None


def connection_tokens(fields: RawFields) -> frozenset[bytes]:
    """The lower-case options of every `Connection` field: the fields they name are
    hop-by-hop too (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in fields:
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return frozenset(tokens)


def forwarded_for(fields: RawFields) -> bytes:
    """Every `X-Forwarded-For` line, combined in order (`a, b`); empty when there is none."""
    values = [value.strip() for name, value in fields if len(name) == 15 and name.lower() == _XFF]
    return b", ".join(value for value in values if value)


def request_head(method: bytes, target: bytes, fields: RawFields, host: bytes, drop: frozenset[bytes],
                 peer: str | None, length: int | None, extra: bytes = b"") -> bytes:
    """The request line and end-to-end fields for an upstream: without ``drop`` (which
    includes `REQUEST_DROP`) nor the fields `Connection` names, with the upstream's `Host`,
    the forwarding chain extended by ``peer``, ``extra`` field lines (a peer's key), and the
    body's length (None: no body, and none expected by the method, so no `Content-Length`;
    RFC 9110 §8.6)."""
    lines = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    chain: list[bytes] = []
    named: frozenset[bytes] | None = None
    for name, value in fields:
        lower = name.lower()
        if lower in drop:
            if lower == b"connection" and named is None:
                named = connection_tokens(fields)
            continue
        if lower == _XFF:
            if value.strip():
                chain.append(value.strip())
            continue
        lines += (name, b": ", value, b"\r\n")
    if named and not named <= drop:  # rare: the client's `Connection` names more fields: rebuilt once without them
        return request_head(method, target, fields, host, drop | named, peer, length, extra)
    if peer:
        chain.append(peer.encode("latin-1"))
    if chain:
        lines += (b"X-Forwarded-For: ", b", ".join(chain), b"\r\n")
    if extra:
        lines.append(extra)
    lines.append(b"\r\n" if length is None else b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)


def response_drop(fields: RawFields) -> frozenset[bytes]:
    """The fields of an upstream's answer not passed on: hop-by-hop ones, and those its
    `Connection` field names."""
    named = connection_tokens(fields)
    return RESPONSE_DROP | named if named else RESPONSE_DROP


def host_problem(hosts: int, version: str) -> str | None:
    """RFC 9112 §3.2: a request has at most one `Host` field, and an HTTP/1.1 request exactly
    one; ``hosts`` is how many it has. None, or what is wrong (a 400)."""
    if hosts > 1:
        return "more than one Host header"
    if hosts == 0 and version == "1.1":
        return "an HTTP/1.1 request must have a Host header"
    return None


class RawHeaders(Mapping[str, str]):
    """A read-only, case-insensitive view of raw pairs for code that reads fields by name.
    Values are decoded as aiohttp decodes them (UTF-8, undecodable bytes kept as surrogates);
    the first of repeated fields wins."""

    __slots__ = ("raw", "_index")

    def __init__(self, raw: RawFields) -> None:
        self.raw = raw
        self._index: dict[bytes, bytes] | None = None  # lower-case name -> first value, built when first asked

    def get(self, name: str, default: Any = None) -> Any:
        index = self._index
        if index is None:
            index = self._index = {found.lower(): value for found, value in reversed(self.raw)}
        value = index.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("utf-8", "surrogateescape")

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self.raw)

    def __len__(self) -> int:
        return len(self.raw)
