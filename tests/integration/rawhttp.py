"""HTTP/1.x on a raw socket, for tests that look at the wire: bytes in, bytes out.

Every wait is bounded by the socket's timeout; a wait that runs out fails the test with
what had arrived so far. Answers are parsed strictly (a chunked body must be well-formed
chunk by chunk), so bytes that do not belong in an answer (a stray interim response in
the middle of a body, a second answer after a close) show up as failures.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from tests.integration.conftest import RunningService

WAIT = 15.0  # seconds any single wait on the wire may take before the test fails


def address(service: RunningService) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(service: RunningService, timeout: float = WAIT, *, sndbuf: int | None = None,
            rcvbuf: int | None = None) -> socket.socket:
    """A new client connection to the service (loopback), every operation bounded by ``timeout``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sndbuf is not None:  # before connecting, so the kernel does not grow it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if rcvbuf is not None:  # a slow reader: most of an answer waits in the service's send buffer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(address(service))
    return sock


def request(
    method: str,
    target: str,
    body: bytes = b"",
    *,
    headers: Iterable[tuple[str, str]] = (),
    version: str = "1.1",
    host: str | None = "test",
    length: bool | None = None,
) -> bytes:
    """One request's bytes. ``Host`` first (None: no Host); ``Content-Length`` when there is a
    body (``length=False`` to leave it out, ``True`` to send it for an empty body too)."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if length or (length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chat_body(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


def chat(model: str, *, version: str = "1.1", host: str | None = "test", headers: Iterable[tuple[str, str]] = (),
         **extra: Any) -> bytes:
    """A chat completion POST for ``model`` (``stream=True``, ``n_chunks``, ``chunk_delay``... in ``extra``)."""
    return request("POST", "/v1/chat/completions", chat_body(model, **extra), version=version, host=host,
                   headers=[("Content-Type", "application/json"), *headers])


def chunked(body: bytes, size: int = 1000) -> bytes:
    """``body`` as a whole chunked body, ``size`` bytes a chunk, last chunk included."""
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


class WireError(AssertionError):
    """The service sent something that is not a well-formed HTTP/1.x answer."""


class ServerClosed(AssertionError):
    """The connection ended (EOF or reset) before a whole answer had arrived."""


@dataclass
class Response:
    """One answer as it arrived: an interim (1xx) one has no body."""

    version: str
    status: int
    reason: str
    header_list: list[tuple[str, str]]
    body: bytes
    raw: bytes  # the bytes of this answer on the wire: head and framed body
    framing: str  # "length", "chunked", "close" (read to EOF) or "none"

    def header(self, name: str) -> str | None:
        """The first field line named ``name`` (any case), or None."""
        for key, value in self.header_list:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> str:
        """The message of the service's own JSON error `{"error": "..."}` (fails if it is not one)."""
        content_type = self.header("Content-Type") or ""
        assert content_type.startswith("application/json"), f"error answer is not JSON: {self.raw[:500]!r}"
        data = self.json()
        assert isinstance(data, dict) and isinstance(data.get("error"), str), f"not {{'error': str}}: {data!r}"
        return data["error"]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.raw[:300]!r}{'...' if len(self.raw) > 300 else ''}>"


@dataclass
class Reader:
    """Reads answers off a client socket, one at a time, strictly."""

    sock: socket.socket
    buffer: bytes = b""
    received: bytearray = field(default_factory=bytearray)  # everything that arrived, for messages
    eof: bool = False

    def _fill(self, what: str) -> None:
        if self.eof:
            raise ServerClosed(f"connection closed while waiting for {what}; received: {bytes(self.received)[-600:]!r}")
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise AssertionError(
                f"nothing more within {self.sock.gettimeout()} s while waiting for {what}; "
                f"received: {bytes(self.received)[-600:]!r}") from None
        if not data:
            self.eof = True
            raise ServerClosed(f"connection closed while waiting for {what}; received: {bytes(self.received)[-600:]!r}")
        self.buffer += data
        self.received += data

    def _take(self, n: int, what: str) -> bytes:
        while len(self.buffer) < n:
            self._fill(what)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self, what: str, limit: int = 1 << 20) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise WireError(f"no end of line in {len(self.buffer)} bytes of {what}: {self.buffer[:300]!r}")
            self._fill(what)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def response(self, *, head_request: bool = False) -> Response:
        """The next answer, interim (1xx) ones included, each on its own."""
        start = len(self.received) - len(self.buffer)
        while b"\r\n\r\n" not in self.buffer:
            self._fill("an answer's head")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise WireError(f"not a status line: {lines[0]!r} (received: {bytes(self.received)[-600:]!r})")
        version, status, reason = parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""
        header_list: list[tuple[str, str]] = []
        for line in lines[1:]:
            if ":" not in line:
                raise WireError(f"not a header field line: {line!r} in {head[:600]!r}")
            name, value = line.split(":", 1)
            header_list.append((name, value.strip()))
        found = {name.lower(): value for name, value in reversed(header_list)}
        body, framing = b"", "none"
        if 100 <= status < 200 or status in (204, 304) or head_request:
            pass
        elif "chunked" in found.get("transfer-encoding", "").lower():
            body, framing = self._chunked_body(), "chunked"
        elif "content-length" in found:
            body, framing = self._take(int(found["content-length"]), "an answer's body"), "length"
        else:  # delimited by the end of the connection
            framing = "close"
            try:
                while True:
                    self._fill("the end of a close-delimited body")
            except ServerClosed:
                pass
            body, self.buffer = self.buffer, b""
        end = len(self.received) - len(self.buffer)
        return Response(version, status, reason, header_list, body, bytes(self.received[start:end]), framing)

    def _chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self._line("a chunk-size line")
            size_text = size_line.split(b";", 1)[0].strip()
            if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise WireError(f"bad chunk-size line {size_line[:200]!r} after {len(body)} body bytes: "
                                f"{bytes(body[-300:])!r}")
            size = int(size_text, 16)
            if size == 0:
                while self._line("a chunked body's trailer"):  # trailer fields, up to an empty line
                    pass
                return bytes(body)
            data = self._take(size + 2, "a chunk's data")
            if data[-2:] != b"\r\n":
                raise WireError(f"chunk of {size} bytes not followed by CRLF: {data[-200:]!r}")
            body += data[:-2]

    def interim_and_final(self) -> tuple[list[Response], Response]:
        """The 1xx answers (if any) and then the final answer to one request."""
        interim = []
        while True:
            answer = self.response()
            if answer.status >= 200 or answer.status == 101:
                return interim, answer
            interim.append(answer)

    def wait_for(self, marker: bytes) -> None:
        """Wait until ``marker`` has arrived (nothing is consumed: `response` still reads it)."""
        while marker not in self.buffer:
            self._fill(repr(marker))

    def rest(self, after: str = "") -> bytes:
        """Everything the service still sends until it closes the connection (fails if it
        does not close within the socket's timeout)."""
        data = self.buffer
        self.buffer = b""
        while not self.eof:
            try:
                self._fill("the service to close the connection")
            except ServerClosed:
                break
            except AssertionError:
                raise AssertionError(f"expected the end of the connection{after}; it stayed open "
                                     f"{self.sock.gettimeout()} s, receiving: {data[:1000]!r}") from None
            data += self.buffer
            self.buffer = b""
        return data

    def expect_close(self, after: str = "") -> None:
        """The service closes the connection and sends nothing more."""
        extra = self.rest(after)
        assert extra == b"", f"expected the connection to end{after}, got more bytes: {extra[:1000]!r}"


def read_until_closed(sock: socket.socket) -> bytes:
    """All bytes until EOF or reset; fails if the socket's timeout passes first."""
    return Reader(sock).rest()


def send_until_refused(sock: socket.socket, chunks: Iterable[bytes], *, stall: float = 5.0) -> tuple[int, str]:
    """Send ``chunks`` until they run out, the service closes the connection, or it stops
    reading for ``stall`` seconds. Returns (bytes sent, "done" | "closed" | "stalled")."""
    previous = sock.gettimeout()
    sock.settimeout(stall)
    sent = 0
    try:
        for data in chunks:
            view = memoryview(data)
            while view:
                try:
                    n = sock.send(view)
                except (BrokenPipeError, ConnectionResetError):
                    return sent, "closed"
                except TimeoutError:
                    return sent, "stalled"
                sent += n
                view = view[n:]
        return sent, "done"
    finally:
        sock.settimeout(previous)


class Sender(threading.Thread):
    """Sends ``chunks`` in a thread, for a client that writes while it reads, until they run
    out, the service closes the connection, or `stop()`. A send the service does not take
    (it stopped reading) waits; ``sent`` is what the service has accepted so far."""

    def __init__(self, sock: socket.socket, chunks: Iterable[bytes]) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.chunks = chunks
        self.sent = 0
        self.how = ""  # "done", "closed" or "stopped"
        self.last_progress = time.monotonic()
        self.finished = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            for data in self.chunks:
                view = memoryview(data)
                while view:
                    if self._halt.is_set():
                        self.how = "stopped"
                        return
                    try:
                        n = self.sock.send(view)
                    except TimeoutError:
                        continue  # not taken for the socket's timeout: still waiting
                    except OSError:  # EPIPE, ECONNRESET, or our own socket closed
                        self.how = "closed"
                        return
                    self.sent += n
                    self.last_progress = time.monotonic()
                    view = view[n:]
            self.how = "done"
        finally:
            self.finished.set()

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_progress

    def stop(self) -> None:
        """End the sending (and the connection, which wakes a send that is waiting)."""
        self._halt.set()
        if not self.finished.is_set():
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(timeout=WAIT)


class RssWatch(threading.Thread):
    """Samples a process's resident memory until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = rss(pid)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> RssWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(timeout=WAIT)
        self.peak = max(self.peak, rss(self.process.pid))


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


MB = 1_000_000
