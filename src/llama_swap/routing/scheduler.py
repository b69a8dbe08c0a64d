"""Admission, joining, queueing and swap decisions as a pure state machine.

The scheduler never touches a process, a clock or the network. Each event method
(`request`, `cancel`, `finished`, `swap_done`, `exited`, `unload`, `stopped`,
`shutdown`) updates its view of the world and returns the actions the caller must
perform. The router (the only place with effects) performs them and reports back.
Because every decision that gates a state change is made here, in one place and
synchronously, no decision is ever taken from a stale snapshot.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable, Mapping, NamedTuple, Union

from llama_swap.routing.policy import EvictionPolicy

DEFAULT_CONCURRENCY_LIMIT = 10


class ModelState(StrEnum):
    """What the scheduler believes about a model's upstream."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


ALIVE = frozenset({ModelState.STARTING, ModelState.READY, ModelState.STOPPING})


class Grant(NamedTuple):
    """Request ``req`` may be served by its (ready) model now (a tuple: one per request)."""

    req: int


@dataclass(frozen=True)
class Fail:
    """Request ``req`` ends with an error answered to the client."""

    req: int
    status: int
    message: str


@dataclass(frozen=True)
class StartSwap:
    """Stop ``evict`` (in parallel), then start ``target``; report with `swap_done`."""

    target: str
    evict: frozenset[str]


@dataclass(frozen=True)
class StopModel:
    """Stop a model that is being unloaded; report with `stopped`."""

    model: str


@dataclass(frozen=True)
class AbortStart:
    """Cancel the running start of ``model``; its swap then reports a failure."""

    model: str


@dataclass(frozen=True)
class Retired:
    """A reloaded model's old upstream is gone: switch to its new config (or drop it)."""

    model: str
    removed: bool


Action = Union[Grant, Fail, StartSwap, StopModel, AbortStart, Retired]


class Phase(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"  # joined a swap in flight
    GRANTED = "granted"


@dataclass(slots=True)
class _Request:
    model: str
    priority: int
    seq: int
    counted: bool
    phase: Phase = Phase.QUEUED


@dataclass
class _Slot:
    state: ModelState = ModelState.STOPPED
    inflight: int = 0
    reserved: int = 0  # queued + waiting + in flight, for the concurrency limit
    limit: int = DEFAULT_CONCURRENCY_LIMIT
    retiring: bool = False  # its config changed or went away: drain, stop, then switch
    removed: bool = False


@dataclass
class _Swap:
    evict: frozenset[str]
    waiters: list[int] = field(default_factory=list)


class UnknownModel(KeyError):
    """Raised for a model name the scheduler was not configured with."""


class Scheduler:
    """FIFO scheduler with per-model admission limits and a pluggable eviction policy."""

    def __init__(
        self,
        models: Iterable[str],
        policy: EvictionPolicy,
        *,
        limits: Mapping[str, int] | None = None,
        priorities: Mapping[str, int] | None = None,
    ) -> None:
        self._policy = policy
        self._slots: dict[str, _Slot] = {m: _Slot() for m in models}
        for model, limit in (limits or {}).items():
            self._slots[model].limit = limit if limit > 0 else DEFAULT_CONCURRENCY_LIMIT
        self._priorities = dict(priorities or {})
        self._requests: dict[int, _Request] = {}
        self._queue: list[int] = []
        self._swaps: dict[str, _Swap] = {}
        self._seq = itertools.count()
        self._closed = False

    # ----------------------------------------------------------------- queries
    def state(self, model: str) -> ModelState:
        return self._slots[model].state

    def inflight(self, model: str) -> int:
        return self._slots[model].inflight

    def idle(self, model: str) -> bool:
        """Ready with nothing in flight: the state in which a TTL runs."""
        slot = self._slots.get(model)
        return slot is not None and slot.state is ModelState.READY and slot.inflight == 0

    def queue_position(self, model: str) -> int | None:
        """1-based position of the first queued request for ``model``, if any."""
        for position, req in enumerate(self._queue, start=1):
            if self._requests[req].model == model:
                return position
        return None

    def queued(self) -> list[tuple[int, str]]:
        """Queued requests in service order, as (request id, model)."""
        return [(r, self._requests[r].model) for r in self._queue]

    # ------------------------------------------------------------------ events
    def request(self, req: int, model: str, *, counted: bool = True) -> list[Action]:
        """A client asks for ``model``. ``counted`` requests count toward the limit."""
        slot = self._slots.get(model)
        if slot is None:
            raise UnknownModel(model)
        if self._closed:
            return [Fail(req, 503, "llama-swap is shutting down")]
        if counted and slot.reserved >= slot.limit:
            return [
                Fail(req, 429, f"too many requests for model '{model}' (concurrency limit {slot.limit})")
            ]
        self._requests[req] = _Request(model, self._priorities.get(model, 0), next(self._seq), counted)
        if counted:
            slot.reserved += 1
        actions = self._place(req)
        if self._requests.get(req) is not None and self._requests[req].phase is Phase.QUEUED:
            self._enqueue(req)
        return actions

    def serve_now(self, req: int, model: str) -> bool:
        """Grant a counted request at once when nothing stands in its way — its model ready,
        not retiring nor swapping, under its limit, nobody queued (so nobody it must wait
        behind): the common case, decided without building actions. False: use `request`."""
        slot = self._slots.get(model)
        if (
            slot is None or self._closed or self._queue or slot.state is not ModelState.READY or slot.retiring
            or slot.reserved >= slot.limit or model in self._swaps
        ):
            return False
        self._requests[req] = _Request(model, self._priorities.get(model, 0), next(self._seq), True, Phase.GRANTED)
        slot.reserved += 1
        slot.inflight += 1
        return True

    def cancel(self, req: int) -> list[Action]:
        """A client that was not yet granted went away."""
        r = self._requests.get(req)
        if r is None or r.phase is Phase.GRANTED:
            return []
        if r.phase is Phase.QUEUED:
            self._queue.remove(req)
        else:
            self._swaps[r.model].waiters.remove(req)
        self._forget(req)
        return self._drain()

    def finished(self, req: int) -> list[Action]:
        """A granted request completed (or its client went away)."""
        r = self._requests.get(req)
        if r is None or r.phase is not Phase.GRANTED:
            return []
        slot = self._slots.get(r.model)  # gone if the model was removed and crashed meanwhile
        self._forget(req)
        if slot is None:
            return self._drain()
        slot.inflight -= 1
        return self._stop_if_retired(r.model) + self._drain()

    def swap_done(self, target: str, error: str | None, status: int = 503) -> list[Action]:
        """The swap started by `StartSwap(target)` ended: target ready, or failed."""
        swap = self._swaps.pop(target)
        actions: list[Action] = []
        for model in swap.evict:
            actions.extend(self._now_stopped(model))
        slot = self._slots[target]
        if error is None:
            slot.state = ModelState.READY
            for req in swap.waiters:
                actions.append(self._grant(req))
            actions.extend(self._stop_if_retired(target))
        else:
            slot.state = ModelState.FAILED
            for req in swap.waiters:
                self._forget(req)
                actions.append(Fail(req, status, error))
        return actions + self._drain()

    def exited(self, model: str) -> list[Action]:
        """A ready upstream exited on its own (crash)."""
        if self._slots[model].state is not ModelState.READY:
            return self._drain()
        return self._now_stopped(model) + self._drain()

    def expire(self, model: str) -> list[Action]:
        """The model's TTL ran out: stop it, unless a request arrived meanwhile."""
        if not self.idle(model):
            return []
        self._slots[model].state = ModelState.STOPPING
        return [StopModel(model)]

    def configure(
        self,
        limits: Mapping[str, int],
        policy: EvictionPolicy,
        priorities: Mapping[str, int],
        changed: Iterable[str],
    ) -> list[Action]:
        """Apply a reloaded config. ``limits`` names every model of the new config.

        New models are usable at once; ``changed`` ones and removed ones keep serving
        what they have in flight, then stop (changed ones restart on their next request).
        """
        self._policy = policy
        self._priorities = dict(priorities)
        for model, limit in limits.items():
            slot = self._slots.setdefault(model, _Slot())
            slot.limit = limit if limit > 0 else DEFAULT_CONCURRENCY_LIMIT
        actions: list[Action] = []
        for model in changed:
            actions.extend(self._retire(model))
        for model in [m for m in self._slots if m not in limits]:
            self._slots[model].removed = True
            actions.extend(self._fail_queued(model, 404, f"model '{model}' was removed from the config"))
            actions.extend(self._retire(model))
        return actions + self._drain()

    def unload(self, models: Iterable[str], reason: str) -> list[Action]:
        """Stop ``models`` now: waiting clients fail, running or starting upstreams stop."""
        actions: list[Action] = []
        for model in models:
            slot = self._slots[model]
            actions.extend(self._fail_queued(model, 503, reason))
            if model in self._swaps:
                actions.append(AbortStart(model))
            elif slot.state is ModelState.READY:
                slot.state = ModelState.STOPPING
                actions.append(StopModel(model))
            elif slot.state is ModelState.FAILED:
                slot.state = ModelState.STOPPED
        return actions

    def stopped(self, model: str) -> list[Action]:
        """A `StopModel` finished."""
        if self._slots[model].state is not ModelState.STOPPING or self._evicted_by_swap(model):
            return self._drain()
        return self._now_stopped(model) + self._drain()

    def shutdown(self) -> list[Action]:
        """Fail everyone not yet served; later requests are refused."""
        self._closed = True
        actions: list[Action] = []
        for req in list(self._queue):
            actions.append(Fail(req, 503, "llama-swap is shutting down"))
            self._forget(req)
        self._queue.clear()
        for target in self._swaps:
            actions.append(AbortStart(target))
        return actions

    # ----------------------------------------------------------------- helpers
    def _place(self, req: int) -> list[Action]:
        """Serve, join or start a swap for ``req``; leave it queued if none may happen yet."""
        r = self._requests[req]
        model = r.model
        slot = self._slots[model]
        if model in self._swaps:
            r.phase = Phase.WAITING
            self._swaps[model].waiters.append(req)
            return []
        if slot.retiring:  # waits for the old upstream to drain and stop
            return []
        if slot.state is ModelState.READY:
            if self._wanted_gone_by_earlier(req):
                return []
            return [self._grant(req)]
        if slot.state in (ModelState.STOPPING, ModelState.STARTING):
            return []
        evict = self._policy.evict_for(model, self._running()) - {model}
        for target, swap in self._swaps.items():
            if model in swap.evict or target in evict or evict & swap.evict:
                return []
        if any(self._slots[m].inflight > 0 for m in evict):
            return []
        self._swaps[model] = _Swap(evict, [req])
        r.phase = Phase.WAITING
        slot.state = ModelState.STARTING
        for m in evict:
            self._slots[m].state = ModelState.STOPPING
        return [StartSwap(model, evict)]

    def _wanted_gone_by_earlier(self, req: int) -> bool:
        """True when an earlier queued request must evict this request's model.

        Serving newcomers to a busy ready model while others wait for it to drain
        would starve them; a newcomer waits its turn instead.
        """
        if not self._queue:
            return False
        r = self._requests[req]
        running = self._running()
        for other in self._queue:
            o = self._requests[other]
            if o.seq >= r.seq or o.priority < r.priority or o.model == r.model:
                continue
            if r.model in self._policy.evict_for(o.model, running):
                return True
        return False

    def _retire(self, model: str) -> list[Action]:
        slot = self._slots[model]
        if slot.state in (ModelState.STOPPED, ModelState.FAILED) and model not in self._swaps:
            slot.state = ModelState.STOPPED
            return self._switch(model)
        slot.retiring = True
        return self._stop_if_retired(model)

    def _stop_if_retired(self, model: str) -> list[Action]:
        slot = self._slots[model]
        if not slot.retiring or slot.state is not ModelState.READY or slot.inflight:
            return []
        slot.state = ModelState.STOPPING
        return [StopModel(model)]

    def _now_stopped(self, model: str) -> list[Action]:
        slot = self._slots[model]
        slot.state = ModelState.STOPPED
        if not slot.retiring:
            return []
        slot.retiring = False
        return self._switch(model)

    def _switch(self, model: str) -> list[Action]:
        removed = self._slots[model].removed
        if removed:
            del self._slots[model]
        return [Retired(model, removed)]

    def _fail_queued(self, model: str, status: int, reason: str) -> list[Action]:
        actions: list[Action] = []
        for req in [r for r in self._queue if self._requests[r].model == model]:
            self._queue.remove(req)
            self._forget(req)
            actions.append(Fail(req, status, reason))
        return actions

    def _grant(self, req: int) -> Grant:
        r = self._requests[req]
        r.phase = Phase.GRANTED
        self._slots[r.model].inflight += 1
        return Grant(req)

    def _drain(self) -> list[Action]:
        if not self._queue:
            return []
        actions: list[Action] = []
        for req in list(self._queue):
            if req not in self._requests:
                continue
            self._queue.remove(req)
            placed = self._place(req)
            if self._requests[req].phase is Phase.QUEUED:
                self._queue.insert(self._queue_index(req), req)
            actions.extend(placed)
        return actions

    def _enqueue(self, req: int) -> None:
        self._queue.insert(self._queue_index(req), req)

    def _queue_index(self, req: int) -> int:
        """Position keeping the queue ordered by priority (high first), then arrival."""
        r = self._requests[req]
        for i, other in enumerate(self._queue):
            o = self._requests[other]
            if (o.priority, -o.seq) < (r.priority, -r.seq):
                return i
        return len(self._queue)

    def _forget(self, req: int) -> None:
        r = self._requests.pop(req)
        slot = self._slots.get(r.model)
        if r.counted and slot is not None:
            slot.reserved -= 1

    def _running(self) -> frozenset[str]:
        alive = {m for m, s in self._slots.items() if s.state in ALIVE}
        return frozenset(alive | set(self._swaps))

    def _evicted_by_swap(self, model: str) -> bool:
        return any(model in s.evict for s in self._swaps.values())
