"""Bounded log histories with live subscribers that can never block the writer.

A `LogBuffer` keeps the last `limit` bytes written to it (100 KiB, as llama-swap's log
monitors do) and hands every write to its subscribers. Each subscriber has a bounded
queue; when a reader falls behind, further writes are dropped for it alone and counted,
and the reader later receives a `— N bytes dropped —` notice in place of what it missed.
Drops are never logged (llama-swap #1042: logging the drop into the stream being dropped
flooded disks). Writes may come from any thread; waking a reader is thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Callable, Protocol

HISTORY_BYTES = 100 * 1024
SUBSCRIBER_QUEUE = 1024  # entries, like llama-swap's broadcast channel


def drop_notice(count: int) -> bytes:
    return f"\n— {count} bytes dropped —\n".encode()


class Publisher(Protocol):
    def unsubscribe(self, sub: Subscription) -> None: ...


class Subscription:
    """One live reader of a `LogBuffer` or `EventBus`; `await get()` returns the next chunk, `None` at the end."""

    def __init__(
        self, owner: Publisher, max_entries: int, notice: Callable[[int], bytes] = drop_notice
    ) -> None:
        self._owner = owner
        self._max = max_entries
        self._notice = notice  # what the reader gets in place of what it missed
        self._queue: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    @property
    def dropped(self) -> int:
        """Bytes dropped and not yet reported to the reader."""
        return self._dropped

    def put(self, data: bytes) -> None:
        """Queue ``data``; never blocks: drops (and counts) when the reader is behind."""
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self._max:
                self._dropped += len(data)
                return
            if self._dropped:
                self._queue.append(self._notice(self._dropped))
                self._dropped = 0
            self._queue.append(data)
        self._notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def get_nowait(self) -> bytes | None:
        """The next chunk, the pending drop notice, or `None` when nothing is waiting."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._dropped:
                notice = self._notice(self._dropped)
                self._dropped = 0
                return notice
            return None

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next chunk; `None` once closed (or after ``timeout`` seconds with nothing new)."""
        while True:
            chunk = self.get_nowait()
            if chunk is not None:
                return chunk
            if self._closed:
                return None
            self._wake.clear()
            if self._queue or self._dropped or self._closed:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return None

    def unsubscribe(self) -> None:
        self.close()
        self._owner.unsubscribe(self)

    def _notify(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)


class LogBuffer:
    """A byte-bounded history plus live subscribers; `write` is cheap and never blocks."""

    def __init__(self, limit: int = HISTORY_BYTES, *, queue_entries: int = SUBSCRIBER_QUEUE) -> None:
        self.limit = limit
        self.queue_entries = queue_entries
        self._history = bytearray()
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._forward: list[Callable[[bytes], None]] = []

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        if not data:
            return
        with self._lock:
            if len(data) >= self.limit:
                self._history[:] = data[-self.limit :]
            else:
                self._history += data
                excess = len(self._history) - self.limit
                if excess > 0:
                    del self._history[:excess]
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.put(data)
        for forward in self._forward:
            forward(data)

    def forward_to(self, target: Callable[[bytes], None]) -> None:
        """Also pass every write on to ``target`` (e.g. a model's buffer feeding `upstream`)."""
        self._forward.append(target)

    def history(self) -> bytes:
        with self._lock:
            return bytes(self._history)

    def clear(self) -> None:
        with self._lock:
            self._history.clear()

    def subscribe(self) -> tuple[bytes, Subscription]:
        """The history so far and a subscription to everything after it, atomically."""
        sub = Subscription(self, self.queue_entries)
        with self._lock:
            self._subscribers.append(sub)
            return bytes(self._history), sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close_subscribers(self) -> None:
        """End every live stream (at shutdown); the history is kept."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.close()


class LogHub:
    """The service's histories: proxy, upstream, combined, and one per model.

    `log_to_stdout` decides, as for stdout, which sources reach `combined` (`GET /logs`):
    proxy, upstream, both or none. `proxy` and `upstream` always keep their own history.
    Each model's buffer forwards to `upstream`.
    """

    def __init__(self, log_to_stdout: str = "proxy", limit: int = HISTORY_BYTES) -> None:
        self.limit = limit
        self.proxy = LogBuffer(limit)
        self.upstream = LogBuffer(limit)
        self.combined = LogBuffer(limit)
        self.models: dict[str, LogBuffer] = {}
        self.log_to_stdout = log_to_stdout
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write_proxy(self, data: bytes | str) -> None:
        self.proxy.write(data)
        if self.log_to_stdout in ("proxy", "both"):
            self.combined.write(data)

    def write_upstream(self, data: bytes | str) -> None:
        self.upstream.write(data)
        if self.log_to_stdout in ("upstream", "both"):
            self.combined.write(data)

    def model(self, model_id: str) -> LogBuffer:
        """The model's buffer, created on first use and kept across reloads."""
        buffer = self.models.get(model_id)
        if buffer is None:
            buffer = self.models[model_id] = LogBuffer(self.limit)
            buffer.forward_to(self.write_upstream)
        return buffer

    def close(self) -> None:
        """End every live stream so shutdown never waits on a reader."""
        self._closed = True
        for buffer in (self.proxy, self.upstream, self.combined, *self.models.values()):
            buffer.close_subscribers()
