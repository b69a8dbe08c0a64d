"""HTTP/1.1 framing of the answers the service writes itself: status lines, heads, chunks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

END_CHUNKS = b"0\r\n\r\n"  # the last chunk of a chunked body
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSE = b"close"  # the `Connection` field of an answer after which the connection ends

_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status, "")


def head(status: int, reason: str, fields: Iterable[tuple[bytes, bytes]], *, drop: frozenset[bytes] | None = None,
         chunked: bool = False, connection: bytes | None = None) -> bytes:
    """A status line and ``fields`` but those named in ``drop`` (lower case), then the framing
    and `Connection` fields the service adds (``connection``: `Incoming.connection`, `CLOSE`,
    or None for HTTP/1.1's default)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, (reason or reason_phrase(status)).encode("latin-1", "replace"))]
    for name, value in fields:
        if drop is None or name.lower() not in drop:
            lines += (name, b": ", value, b"\r\n")
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if connection is not None:
        lines += (b"Connection: ", connection, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def encoded(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]


def json_answer(status: int, body: bytes, headers: Mapping[str, str] | None = None, *,
                connection: bytes | None) -> bytes:
    """A whole answer with a JSON body of known length."""
    fields = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body)), *encoded(headers)]
    return head(status, "", fields, connection=connection) + body
