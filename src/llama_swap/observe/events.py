"""The event stream behind `GET /api/events`, in the Go llama-swap's framing.

Each event is one SSE frame, `event: message` + `data: {"type": T, "data": "<JSON as a
string>"}`, so existing llama-swap clients keep working. An event is encoded once, however
many readers there are, and nothing is encoded while nobody listens. Readers have bounded
queues (the `Subscription` of log streams): a reader that falls behind loses events, and is
then handed `RESYNC` in their place, on which it is sent fresh snapshots — so a slow
browser tab ends up showing the current state instead of a state with holes in it.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from llama_swap.observe.logbuffer import Subscription

QUEUE_EVENTS = 1024  # per reader, as in llama-swap
RESYNC = b""  # handed to a reader in place of the events it missed

MODEL_STATUS = "modelStatus"
LOG_DATA = "logData"
ACTIVITY = "activity"
INFLIGHT = "inflight"
UI_CONFIG = "uiConfig"
PROFILE_CHANGED = "profileChanged"


def frame(kind: str, data: Any) -> bytes:
    """One SSE frame; `data` travels as a JSON document inside a JSON string, as in Go."""
    payload = orjson.dumps({"type": kind, "data": orjson.dumps(data).decode()})
    return b"event: message\ndata: " + payload + b"\n\n"


def _resync(missed: int) -> bytes:
    return RESYNC


class EventBus:
    """Fan-out of events to the live `/api/events` readers; `publish` never blocks."""

    def __init__(self, queue_events: int = QUEUE_EVENTS) -> None:
        self._queue_events = queue_events
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()  # log lines are published from any thread
        # Whether anyone listens: producers skip building events when nobody does. A plain
        # attribute (read on every request), kept in step with the subscriber list.
        self.active = False

    def publish(self, kind: str, data: Any) -> None:
        subscribers = self._subscribers
        if not subscribers:
            return
        encoded = frame(kind, data)
        for sub in subscribers:  # never mutated: (un)subscribing replaces the list
            sub.put(encoded)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_events, notice=_resync)
        with self._lock:
            self._subscribers = [*self._subscribers, sub]
            self.active = True
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not sub]
            self.active = bool(self._subscribers)

    def close(self) -> None:
        """End every reader's stream (at shutdown)."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
            self.active = False
        for sub in subscribers:
            sub.close()
