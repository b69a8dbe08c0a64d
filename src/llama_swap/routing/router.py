"""Drives the pure scheduler against real processes: the only routing code with effects."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from typing import Callable, Iterable, NamedTuple

from llama_swap.process import ModelProcess, ProcessState, StartError
from llama_swap.routing.backoff import Backoff
from llama_swap.routing.policy import EvictionPolicy
from llama_swap.routing.scheduler import (
    AbortStart,
    Action,
    Fail,
    Grant,
    Retired,
    Scheduler,
    StartSwap,
    StopModel,
)

log = logging.getLogger("llama_swap.router")


class RouteError(Exception):
    """A request cannot be served; ``status`` and message go to the client."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, for a `Retry-After` header


class Lease(NamedTuple):
    """A granted request: the ready process to talk to, until `Router.release`."""

    req: int
    process: ModelProcess


class Ticket(NamedTuple):
    """An admitted request, not yet granted."""

    req: int
    model: str
    granted: asyncio.Future[None] | None  # None: granted when admitted


SwapObserver = Callable[[str, float, str], None]
"""Told (model, seconds, outcome) after each start: outcome is "ok", "failed" or "aborted"."""


class Router:
    """Admits requests, starts and stops processes as the scheduler decides."""

    def __init__(
        self,
        processes: dict[str, ModelProcess],
        policy: EvictionPolicy,
        *,
        limits: dict[str, int] | None = None,
        priorities: dict[str, int] | None = None,
        on_swap: SwapObserver | None = None,
    ) -> None:
        self.processes = processes
        self._scheduler = Scheduler(processes, policy, limits=limits, priorities=priorities)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._starts: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Task[None]] = {}
        self._on_swap = on_swap
        self._closed = False
        self._replacements: dict[str, ModelProcess] = {}  # reloaded models waiting to switch
        self._backoff = Backoff()
        self._ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self._keep_alive: dict[str, tuple[int | None, float]] = {}  # model -> (the run's pid, idle seconds)

    # ------------------------------------------------------------------ public
    async def acquire(self, model: str, *, counted: bool = True) -> Lease:
        """Wait until ``model`` is ready and may serve this request (raises `RouteError`)."""
        return await self.wait(self.admit(model, counted=counted))

    def admit(self, model: str, *, counted: bool = True) -> Ticket:
        """Admission, decided at once: raises `RouteError` (e.g. 429) before anything is sent.

        The ticket must then be passed to `wait`, which is where it is granted or failed.
        """
        req = next(self._ids)
        if counted and self._scheduler.serve_now(req, model):
            return Ticket(req, model, None)  # served at once (the common case): nothing to wait for
        if counted:
            self._check_backoff(model)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[req] = granted
        self._apply(self._scheduler.request(req, model, counted=counted))
        if granted.done() and granted.exception() is not None:
            del self._waiting[req]
            raise granted.exception()  # type: ignore[misc]
        return Ticket(req, model, granted)

    def _check_backoff(self, model: str) -> None:
        """A request must not restart a model that keeps failing before its back-off is over."""
        process = self.processes[model]
        if process.state not in (ProcessState.STOPPED, ProcessState.FAILED):
            return
        wait = self._backoff.wait(model, time.monotonic())
        if wait > 0:
            failures = self._backoff.failures(model)
            raise RouteError(
                503,
                f"model '{model}' failed {failures} time{'s' if failures > 1 else ''} in a row and is not "
                f"restarted for another {wait:.1f}s (GET /upstream/{model}/load starts it now); "
                f"last error: {process.last_error}",
                retry_after=math.ceil(wait),
            )

    async def wait(self, ticket: Ticket) -> Lease:
        """Wait for an admitted ticket; a cancelled waiter leaves the queue (or hands back its grant)."""
        lease = self.granted(ticket)
        if lease is not None:
            return lease
        granted = ticket.granted
        assert granted is not None
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self._apply(self._scheduler.finished(ticket.req))
            else:
                self._apply(self._scheduler.cancel(ticket.req))
            raise
        finally:
            self._waiting.pop(ticket.req, None)
        return self._lease(ticket)

    def granted(self, ticket: Ticket) -> Lease | None:
        """The lease of a ticket granted when admitted, without waiting; None if it must `wait`."""
        return self._lease(ticket) if ticket.granted is None else None

    def _lease(self, ticket: Ticket) -> Lease:
        self._refresh_ttl(ticket.model)
        return Lease(ticket.req, self.processes[ticket.model])

    async def load(self, model: str, keep_alive: float | None = None) -> None:
        """Make ``model`` ready without serving a request (load endpoint, preload).

        Goes through the scheduler like a request, so it obeys the eviction policy, but
        does not count toward the model's concurrency limit.
        """
        lease = await self.acquire(model, counted=False)
        if keep_alive is not None:
            self.keep_alive(lease, keep_alive)
        self.release(lease)

    def keep_alive(self, lease: Lease, seconds: float) -> None:
        """How long the leased model stays loaded once idle, for as long as this run of it
        lasts (instead of its `ttl`): negative is never unloaded, 0 unloaded as soon as idle."""
        self._keep_alive[lease.process.id] = (lease.process.pid, seconds)

    def unloads_in(self, model: str) -> float | None:
        """Seconds until ``model`` is unloaded for being idle if nothing uses it meanwhile
        (its TTL in full while in use); None: it is never unloaded for that."""
        timer = self._ttl_timers.get(model)
        if timer is not None:
            return max(0.0, timer.when() - asyncio.get_running_loop().time())
        return self._ttl(model)

    def release(self, lease: Lease) -> None:
        """The granted request is over (answered, failed or abandoned)."""
        self._apply(self._scheduler.finished(lease.req))
        self._refresh_ttl(lease.process.id)

    def queue_length(self) -> int:
        return len(self._scheduler.queued())

    def queue_position(self, model: str) -> int | None:
        return self._scheduler.queue_position(model)

    def reconfigure(
        self,
        *,
        fresh: dict[str, ModelProcess],
        changed: set[str],
        policy: EvictionPolicy,
        limits: dict[str, int],
        priorities: dict[str, int],
    ) -> None:
        """Apply a reloaded config as a diff.

        ``fresh`` holds processes for added and ``changed`` models; ``limits`` names every
        model of the new config, so the others are removed. Unchanged models keep running;
        changed and removed ones switch once their in-flight requests are done.
        """
        for model, process in fresh.items():
            self._backoff.forget(model)
            if model in self.processes:
                self._replacements[model] = process
            else:
                self.processes[model] = process
        self._apply(self._scheduler.configure(limits, policy, priorities, changed))
        for model in list(self.processes):
            self._refresh_ttl(model)

    def crashed(self, model: str) -> None:
        """Called by a process that died on its own while ready."""
        self._backoff.failed(model, time.monotonic())
        self._apply(self._scheduler.exited(model))

    async def unload(self, models: Iterable[str]) -> None:
        """Stop ``models``; clients waiting for them get an error. Returns when all stopped."""
        models = list(models)
        for model in models:
            self._backoff.forget(model)
        self._apply(self._scheduler.unload(models, "model unloaded"))
        await self._settle(models)

    async def close(self) -> None:
        """Admit nothing more: waiting clients fail now and starts are aborted; requests
        already being served go on (the graceful drain before `shutdown`)."""
        self._closed = True
        for model in list(self._ttl_timers):
            self._cancel_ttl(model)
        self._apply(self._scheduler.shutdown())
        await self._settle(self.processes)

    async def shutdown(self) -> None:
        """Fail waiting clients and stop every upstream in parallel."""
        await self.close()
        await asyncio.gather(*(p.stop() for p in self.processes.values()), return_exceptions=True)

    def running(self) -> list[str]:
        """Models whose upstream process is alive, sorted."""
        return sorted(m for m, p in self.processes.items() if p.pid is not None)

    # ----------------------------------------------------------------- effects
    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Grant):
                self._resolve(action.req, None)
            elif isinstance(action, Fail):
                self._resolve(action.req, RouteError(action.status, action.message))
            elif isinstance(action, StartSwap):
                self._starts[action.target] = asyncio.create_task(self._swap(action.target, action.evict))
            elif isinstance(action, StopModel):
                self._stops[action.model] = asyncio.create_task(self._stop(action.model))
            elif isinstance(action, AbortStart):
                task = self._starts.get(action.model)
                if task is not None:
                    task.cancel()
            elif isinstance(action, Retired):
                self._switch(action.model, action.removed)

    def _switch(self, model: str, removed: bool) -> None:
        """The old upstream of a reloaded model is stopped: drop it or use the new config."""
        self._cancel_ttl(model)
        if removed:
            self.processes.pop(model, None)
        elif model in self._replacements:
            self.processes[model] = self._replacements.pop(model)
        log.info("[%s] %s", model, "removed" if removed else "now runs with its new config")

    def _refresh_ttl(self, model: str) -> None:
        """(Re)arm the idle timer when the model is idle; idle time counts from now."""
        if model in self._ttl_timers:
            self._cancel_ttl(model)
        ttl = self._ttl(model)
        if ttl is None or not self._scheduler.idle(model):
            return
        loop = asyncio.get_running_loop()
        self._ttl_timers[model] = loop.call_later(ttl, self._expire, model)

    def _ttl(self, model: str) -> float | None:
        """The idle seconds after which ``model`` is unloaded: a keep_alive asked for its
        current run, else its `ttl`; None: never."""
        process = self.processes.get(model)
        if process is None:
            return None
        kept = self._keep_alive.get(model)
        if kept is not None and kept[0] is not None and kept[0] == process.pid:
            return None if kept[1] < 0 else kept[1]
        return process.config.ttl if process.config.ttl > 0 else None

    def _cancel_ttl(self, model: str) -> None:
        timer = self._ttl_timers.pop(model, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, model: str) -> None:
        self._ttl_timers.pop(model, None)
        actions = self._scheduler.expire(model)
        if actions:
            log.info("[%s] unloading after %ss idle (ttl)", model, self._ttl(model))
        self._apply(actions)

    def _resolve(self, req: int, error: RouteError | None) -> None:
        future = self._waiting.get(req)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    async def _swap(self, target: str, evict: frozenset[str]) -> None:
        started = time.monotonic()
        process = self.processes[target]
        error: str | None = None
        status = 503
        outcome = "failed"
        try:
            if evict:
                log.info("swapping: stopping %s to start %s", ", ".join(sorted(evict)), target)
                await asyncio.gather(*(self._stop_process(m) for m in evict))
            await process.start()
        except StartError as exc:
            error = str(exc)
            log.error("[%s] failed to start: %s", target, error)
        except asyncio.CancelledError:
            outcome = "aborted"
            error = (
                "llama-swap is shutting down"
                if self._closed
                else f"model '{target}' was unloaded before it became ready"
            )
        except Exception as exc:  # a bug must not wedge the model: report it to the waiters
            log.exception("[%s] unexpected error while starting", target)
            error, status = f"unexpected error while starting '{target}': {exc}", 500
        finally:
            self._starts.pop(target, None)
        now = time.monotonic()
        if error is None:
            self._backoff.ready(target, now)
        elif outcome == "failed":
            self._backoff.failed(target, now)
        if self._on_swap is not None:
            self._on_swap(target, now - started, "ok" if error is None else outcome)
        self._apply(self._scheduler.swap_done(target, error, status))
        self._refresh_ttl(target)  # a (re)start resets the idle clock

    async def _stop_process(self, model: str) -> None:
        """Stop a model on purpose; one that was serving fine has its failures forgotten."""
        process = self.processes[model]
        was_ready = process.state is ProcessState.READY
        await process.stop()
        if was_ready:
            self._backoff.forget(model)

    async def _stop(self, model: str) -> None:
        try:
            await self._stop_process(model)
        finally:
            self._stops.pop(model, None)
            self._apply(self._scheduler.stopped(model))

    async def _settle(self, models: Iterable[str]) -> None:
        """Wait for the starts and stops in flight for ``models`` to finish."""
        tasks = [t for m in models for t in (self._starts.get(m), self._stops.get(m)) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
