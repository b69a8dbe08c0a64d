"""One request as the front parsed it: its head, its body so far, and who answers it."""

from __future__ import annotations

from llama_swap.wire.framing import CLOSE
from llama_swap.wire.headers import RawFields, RawHeaders


class Incoming:
    """One request: what the front parsed, and what it decided about it."""

    __slots__ = ("method", "target", "version", "raw_headers", "headers", "keep_alive", "upgrade", "chunked",
                 "head_size", "body", "size", "content_length", "content_type", "expects_continue", "head_done",
                 "complete", "lane", "handed")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.raw_headers: RawFields = []
        self.headers = RawHeaders(self.raw_headers)
        self.keep_alive = True
        self.upgrade = False  # asked to switch protocols: what follows the head is not HTTP
        self.chunked = False
        self.head_size = 0  # bytes of its request line and fields (give or take their separators)
        self.body: list[bytes] = []
        self.size = 0
        self.content_length: int | None = None
        self.content_type = b""
        self.expects_continue = False
        self.head_done = False
        self.complete = False
        self.lane = False  # served by the lane (else by the aiohttp app)
        self.handed = False  # given to the aiohttp app

    @property
    def connection(self) -> bytes | None:
        """The `Connection` field its answer needs: `close` when the connection ends after
        it, `keep-alive` to keep an HTTP/1.0 connection open, none for HTTP/1.1's default."""
        if not self.keep_alive:
            return CLOSE
        return b"keep-alive" if self.version == "1.0" else None

    def head_bytes(self) -> bytes:
        """The request line and fields as received, for the aiohttp handler."""
        lines = [b"%s %s HTTP/%s\r\n" % (self.method, self.target, self.version.encode())]
        lines.extend(name + b": " + value + b"\r\n" for name, value in self.raw_headers)
        lines.append(b"\r\n")
        return b"".join(lines)
