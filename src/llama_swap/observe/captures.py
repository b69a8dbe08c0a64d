"""Captures: the last `captureBuffer` MB of inference requests and their answers, by activity id.

A capture is taken where the answer passes: the request's `Tracked` holds a `Recording` and
the relay's per-chunk call appends each chunk to it (one list append; nothing is copied,
delayed or buffered for the client). Everything else happens after the answer ended and
off the request's task (`loop.call_soon`): headers become redacted `Name: value` lines, a
gzip or deflate answer is decoded, and request and answer are compressed together with zstd
(what the Go llama-swap uses: ~14 µs and ~140× for a 50 KB stream here, 5× faster than zlib
and smaller) from `COMPRESS_FROM` bytes on. What is stored is what counts against the budget
(`capturecache.ByteBoundedFifo`).

The request is kept as the client sent it (before the model's filters), as Go keeps it. An
answer the service gave itself (a 502, a 429…) is kept as the `{"error": …}` it sent.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

import zstandard

from llama_swap.errors import error_body
from llama_swap.observe.capturecache import ByteBoundedFifo
from llama_swap.redact import REDACTED, SECRETS, SENSITIVE_HEADERS
from llama_swap.wire.headers import HOP_BY_HOP, RawFields
from llama_swap.wire.incoming import Incoming

if TYPE_CHECKING:
    from llama_swap.observe.activity import Tracked

log = logging.getLogger("llama_swap.captures")

MB = 1024 * 1024
COLLECT_FACTOR = 4  # a request collects at most this many budgets of raw bytes (they compress well)
ENTRY_COST = 160  # bytes a stored capture costs beyond its blob: the tuple, the bytes object, the dict slot
COMPRESS_FROM = 2048  # smaller captures are kept as they are: zstd's ~8 µs per call would save < 2 KB
_DECODED = (b"gzip", b"deflate")  # answers stored decoded, as Go stores them
_SENSITIVE = frozenset(name.encode() for name in SENSITIVE_HEADERS)
_REDACTED = REDACTED.encode()


class Recording:
    """One request's capture while it runs: references to what passes, nothing copied."""

    __slots__ = ("path", "req_headers", "req_body", "limit", "parts", "resp_headers")

    def __init__(self, path: str, request: Incoming, limit: int) -> None:
        self.path = path
        self.req_headers = request.raw_headers
        self.req_body = request.body
        self.limit = limit  # answer bytes collected at most
        self.parts: list[bytes] = []
        self.resp_headers: RawFields | None = None  # None until an upstream answers


class Stored(NamedTuple):
    """A kept capture: request headers, request body, answer headers and answer body, one
    after the other in ``blob`` (zstd-compressed when ``compressed``), cut at ``sizes``."""

    path: str
    status: int
    blob: bytes
    compressed: bool
    sizes: tuple[int, int, int]

    @property
    def cost(self) -> int:
        return len(self.blob) + len(self.path) + ENTRY_COST


class Captures:
    """The capture buffer: which requests are recorded, and the recent captures kept."""

    def __init__(self, buffer_mb: int) -> None:
        self._fifo: ByteBoundedFifo[Stored] = ByteBoundedFifo(buffer_mb * MB)
        self._pending: list[tuple[int, Recording, int, str | None]] = []
        self._settling: asyncio.Handle | None = None
        self._zstd = zstandard.ZstdCompressor(level=3)

    @property
    def enabled(self) -> bool:
        return self._fifo.budget > 0

    def resize(self, buffer_mb: int) -> None:
        """A reload's `captureBuffer`: the oldest go until the rest fit (all of them at 0)."""
        self._fifo.resize(buffer_mb * MB)

    def watch(self, tracked: Tracked, request: Incoming) -> None:
        """Record ``tracked`` if it is an inference request and captures are on."""
        budget = self._fifo.budget
        if budget and tracked.metered:
            limit = budget * COLLECT_FACTOR - request.size
            if limit >= 0:
                tracked.capture = Recording(tracked.path, request, limit)

    def keep(self, row_id: int, recording: Recording, status: int, error: str | None) -> None:
        """The request ended with activity row ``row_id``: compress and store it soon, after
        this request's task is done."""
        self._pending.append((row_id, recording, status, error))
        if self._settling is None:
            self._settling = asyncio.get_running_loop().call_soon(self._settle)

    def has(self, row_id: int) -> bool:
        """Whether ``row_id`` has a capture (one waiting to be stored counts)."""
        return row_id in self._fifo or any(pending[0] == row_id for pending in self._pending)

    def get(self, row_id: int) -> dict[str, Any] | None:
        """`GET /api/captures/{id}`'s answer (Go's shape, plus `resp_status_code`)."""
        self._settle()
        stored = self._fifo.get(row_id)
        if stored is None:
            return None
        data = zstandard.ZstdDecompressor().decompress(stored.blob) if stored.compressed else stored.blob
        ends = list(itertools.accumulate(stored.sizes))
        req_headers, req_body, resp_headers, resp_body = (
            data[start:end] for start, end in zip([0, *ends], [*ends, len(data)])
        )
        return {
            "id": row_id,
            "req_path": stored.path,
            "req_headers": _header_map(req_headers),
            "req_body": base64.b64encode(req_body).decode(),
            "resp_status_code": stored.status,
            "resp_headers": _header_map(resp_headers),
            "resp_body": base64.b64encode(resp_body).decode(),
        }

    def _settle(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        pending, self._pending = self._pending, []
        for row_id, recording, status, error in pending:
            stored = self._encode(recording, status, error)
            if not self._fifo.add(row_id, stored, stored.cost):
                log.warning("capture %d not kept: %d bytes compressed, more than captureBuffer (%d MB)",
                            row_id, len(stored.blob), self._fifo.budget // MB)

    def _encode(self, recording: Recording, status: int, error: str | None) -> Stored:
        req_headers = header_block(recording.req_headers)
        req_body = b"".join(recording.req_body)
        if recording.resp_headers is None:  # the service answered itself
            resp_headers = b"Content-Type: application/json" if error else b""
            resp_body = error_body(error, status) if error else b""
        else:
            resp_body = b"".join(recording.parts)
            resp_headers, resp_body = _decoded(header_block(recording.resp_headers, HOP_BY_HOP), resp_body,
                                               recording.limit)
        data = b"".join((req_headers, req_body, resp_headers, resp_body))
        compressed = len(data) >= COMPRESS_FROM
        return Stored(recording.path, status, self._zstd.compress(data) if compressed else data, compressed,
                      (len(req_headers), len(req_body), len(resp_headers)))


def header_block(fields: RawFields, skip: frozenset[bytes] = frozenset()) -> bytes:
    """Fields as `Name: value` lines, those in ``skip`` left out, and credentials — by name,
    or any value holding a configured API key — `[REDACTED]`."""
    pattern = SECRETS.pattern
    lines = []
    for name, value in fields:
        lower = name.lower()
        if lower in skip:
            continue
        if lower in _SENSITIVE or (pattern is not None and pattern.search(value.decode("latin-1"))):
            value = _REDACTED
        lines.append(name + b": " + value)
    return b"\r\n".join(lines)


def _header_map(block: bytes) -> dict[str, str]:
    """One value per name, the first, as Go shows them."""
    shown: dict[str, str] = {}
    seen: set[str] = set()
    for line in block.decode("latin-1").split("\r\n") if block else ():
        name, _, value = line.partition(": ")
        if name.lower() not in seen:
            seen.add(name.lower())
            shown[name] = value
    return shown


def _decoded(headers: bytes, body: bytes, limit: int) -> tuple[bytes, bytes]:
    """A gzip or deflate answer decoded (at most ``limit`` bytes), its `Content-Encoding`
    dropped; as it was when it cannot be."""
    lines = headers.split(b"\r\n")
    for index, line in enumerate(lines):
        name, _, value = line.partition(b": ")
        coding = value.strip().lower()
        if name.lower() == b"content-encoding" and coding in _DECODED:
            decoder = zlib.decompressobj(47 if coding == b"gzip" else 15)
            try:
                plain = decoder.decompress(body, limit)
            except zlib.error:
                break
            if decoder.unconsumed_tail:
                break
            return b"\r\n".join(lines[:index] + lines[index + 1:]), plain
    return headers, body
