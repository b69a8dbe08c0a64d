"""One request as the front parsed it: its head, its body so far, and who answers it."""

from __future__ import annotations

from llama_swap.wire.framing import CLOSE
from llama_swap.wire.headers import RawFields, RawHeaders


class Incoming:
    """One request: what the front parsed, and what it decided about it."""

    __slots__ = ("method", "target", "version", "raw_headers", "headers", "keep_alive", "connection", "upgrade", "chunked",
                 "body", "size", "content_length", "content_type", "expects_continue", "head_done",
                 "complete", "lane", "handed")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.raw_headers: RawFields = []
        self.headers = RawHeaders(self.raw_headers)
        self.keep_alive = True
        self.connection: bytes | None = None  # the `Connection` field its answer needs (`end_connection`)
        self.upgrade = False  # asked to switch protocols: what follows the head is not HTTP
        self.chunked = False
        self.body: list[bytes] = []
        self.size = 0
        self.content_length: int | None = None
        self.content_type = b""
        self.expects_continue = False
        self.head_done = False
        self.complete = False
        self.lane = False  # served by the lane (else by the aiohttp app)
        self.handed = False  # given to the aiohttp app

    def end_connection(self) -> None:
        """The connection ends after its answer (which says so: `Connection: close`); for
        HTTP/1.0 kept alive, `connection` is `keep-alive`, and none for HTTP/1.1's default."""
        self.keep_alive = False
        self.connection = CLOSE

    def head_bytes(self) -> bytes:
        """The request line and fields as received, for the aiohttp handler."""
        lines = [b"%s %s HTTP/%s\r\n" % (self.method, self.target, self.version.encode())]
        lines.extend(name + b": " + value + b"\r\n" for name, value in self.raw_headers)
        lines.append(b"\r\n")
        return b"".join(lines)
