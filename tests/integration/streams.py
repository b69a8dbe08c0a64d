"""Clients of the service's long-lived streams: one that reads everything, one that reads nothing."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import orjson

from tests.integration.conftest import RunningService, wait_until


class StreamReader:
    """Reads a log stream in a thread, collecting what arrives."""

    def __init__(self, service: RunningService, path: str) -> None:
        self.data = b""
        self.status: int | None = None
        self.ended = threading.Event()
        self._client = httpx.Client(base_url=service.url, timeout=httpx.Timeout(60.0))
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()
        assert wait_until(lambda: self.status is not None, timeout=10), "stream did not start"

    def _run(self, path: str) -> None:
        try:
            with self._client.stream("GET", path) as response:
                self.status = response.status_code
                for chunk in response.iter_raw():
                    self.data += chunk
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def close(self) -> None:
        self._client.close()


class EventReader(StreamReader):
    """Reads `/api/events` in a thread; `events()` decodes the Go-framed SSE seen so far."""

    def __init__(self, service: RunningService) -> None:
        super().__init__(service, "/api/events")

    def events(self) -> list[tuple[str, Any]]:
        """(type, data) of every complete frame so far; `data` is decoded from its JSON string."""
        found = []
        for block in self.data.split(b"\n\n")[:-1]:
            lines = block.split(b"\n")
            assert lines[0] == b"event: message", block
            assert lines[1].startswith(b"data: "), block
            envelope = orjson.loads(lines[1][len(b"data: "):])
            assert set(envelope) == {"type", "data"} and isinstance(envelope["data"], str), envelope
            found.append((envelope["type"], orjson.loads(envelope["data"])))
        return found

    def of_type(self, kind: str) -> list[Any]:
        return [data for t, data in self.events() if t == kind]

    def wait_for(self, kind: str, predicate: Any = lambda data: True, timeout: float = 10.0) -> Any:
        """The first event of ``kind`` matching ``predicate``; fails after ``timeout`` seconds."""
        def match() -> Any:
            return next((d for d in self.of_type(kind) if predicate(d)), None)

        assert wait_until(lambda: match() is not None, timeout=timeout), f"no matching {kind}: {self.of_type(kind)}"
        return match()


def stalled_reader(service: RunningService, path: str) -> socket.socket:
    """A client that asks for a stream and then never reads a byte."""
    host, port = service.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock
