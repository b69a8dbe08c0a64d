"""One upstream inference server: spawn, health-check, stop escalation, crash detection.

A `ModelProcess` owns its child process and state. `start` and `stop` are serialised
by one lock, so a stop requested during a start waits for (or, when the caller cancels
the start, follows) it — never two processes for one model. The child runs in its own
process group (so a wrapper script's children are signalled too), receives SIGKILL if
the service dies (parent-death signal) and is registered with the `Reaper`.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import signal
import time
from collections import deque
from enum import StrEnum
from typing import Callable, Iterator
from urllib.parse import urlsplit

import aiohttp

from llama_swap.config import ModelConfig
from llama_swap.ports import bind_hosts, can_bind, next_free
from llama_swap.reaper import Reaper
from llama_swap.redact import redact_argv
from llama_swap.warm.swaps import WarmRun, WarmSwaps
from llama_swap.wire.upstream import Upstream, address

log = logging.getLogger("llama_swap.process")
upstream_log = logging.getLogger("llama_swap.upstream")

OUTPUT_LINES = 1000  # lines of upstream output kept per model
MAX_LINE = 16384  # bytes of an unterminated line kept before it is emitted anyway
TAIL_LINES = 10  # lines of output quoted in a start error
FIRST_POLL = 0.003  # seconds before the first health poll
MAX_POLL = 0.005  # poll interval cap: a model is served within ~5 ms of being healthy (a poll is a cheap local GET; llama-server does not log them)
POLL_TIMEOUT = 2.0  # each health GET gets its own short timeout
ABORT_GRACE = 5.0  # graceful window when a failed or aborted start is torn down
STOP_POLL = 0.05  # how often a stop checks whether the process group is gone
KILL_WAIT = 5.0  # how long a stop waits for SIGKILLed members to be gone (a process in D state takes its time)
HEALTH_FAILURES = 3  # failed checks in a row after which a ready upstream counts as hung
MAX_CHECK_TIMEOUT = 5.0  # seconds a check of a ready upstream may take

_PR_SET_PDEATHSIG = 1
_STAT_RSS = 21  # index of `rss` (pages) among /proc/<pid>/stat fields after the command name
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcessState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


class StartError(Exception):
    """The upstream could not be started; the message says why and quotes its output."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: SIGKILL it when the service's thread dies.

    If the service already died between fork and here, the signal will never come: exit.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:
        os._exit(1)


def _group_members(pgid: int, entries: list[str]) -> Iterator[list[bytes]]:
    """`/proc/<pid>/stat` fields (from the state on) of each non-zombie member of the group."""
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            yield fields


def _group_alive(pgid: int) -> bool:
    """True while the process group has a member that is not a zombie."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return any(True for _ in _group_members(pgid, entries))


def group_rss(pgid: int) -> int | None:
    """Resident memory of a process group (a wrapper script and its server), in bytes."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    return sum(int(fields[_STAT_RSS]) for fields in _group_members(pgid, entries)) * _PAGE_SIZE


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ModelProcess:
    """The lifecycle of one model's upstream server."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        health_check_timeout: int,
        health_check_interval: float = 0,
        session: aiohttp.ClientSession,
        reaper: Reaper | None = None,
        on_state: Callable[[str, ProcessState], None] | None = None,
        on_crash: Callable[[str], None] | None = None,
        on_output: Callable[[str], None] | None = None,
        reserved_ports: Callable[[], set[int]] | None = None,
        warm: WarmSwaps | None = None,
    ) -> None:
        self.config = config
        self._warm = warm  # KV caches saved before a stop and restored after a start
        self._warm_run: WarmRun | None = None  # this run's, when warm swaps apply to it
        self._reserved_ports = reserved_ports  # ports other models were given: never moved onto
        self.id = config.id  # a plain attribute: read on every request (pydantic's are slower)
        self._on_output = on_output  # e.g. the model's log history
        self.health_check_timeout = health_check_timeout
        self.health_check_interval = health_check_interval  # while ready; 0 = not checked
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES)
        self.last_error: str | None = None
        self._session = session
        self._reaper = reaper
        self._on_state = on_state
        self._on_crash = on_crash
        self._state = ProcessState.STOPPED
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[bool] | None = None
        self._monitor: asyncio.Task[None] | None = None
        # cmdStop helpers being waited on: held so the loop cannot collect them mid-wait.
        self._stoppers: set[asyncio.Task[int]] = set()
        self._lock = asyncio.Lock()
        self._stop_requested = False
        self._upstream_of: ModelConfig | None = None
        self._upstream: Upstream

    # ----------------------------------------------------------------- queries
    @property
    def state(self) -> ProcessState:
        return self._state

    def is_ready(self) -> bool:
        return self._state is ProcessState.READY

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def upstream(self) -> Upstream:
        """Where its server listens and how to talk to it, read once per config (a reload
        of an unchanged model replaces its config object)."""
        if self._upstream_of is not self.config:
            timeouts = self.config.timeouts
            self._upstream = address(self.config.proxy, connect=timeouts.connect, tls_handshake=timeouts.tls_handshake,
                                     response_header=timeouts.response_header, keepalive=timeouts.keepalive, idle_conn=timeouts.idle_conn)
            self._upstream_of = self.config
        return self._upstream

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        return list(self.output)[-lines:]

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Spawn the upstream and wait until it is healthy. Idempotent when ready."""
        async with self._lock:
            if self._state is ProcessState.READY:
                return
            self._set_state(ProcessState.STARTING)
            started = time.monotonic()
            try:
                await self._spawn()
                await self._wait_healthy()
                if self._warm is not None and self._warm_run is not None:
                    await self._warm.restore(self.id, self._warm_run, self.config.proxy.rstrip("/"))
            except BaseException as exc:
                if self._proc is not None:
                    await asyncio.shield(self._terminate(ABORT_GRACE))
                if isinstance(exc, StartError):
                    self.last_error = str(exc)
                    self._set_state(ProcessState.FAILED)
                else:
                    self._set_state(ProcessState.STOPPED)
                raise
            self.last_error = None
            self._set_state(ProcessState.READY)
            self._watcher = asyncio.create_task(self._watch_exit())
            if self.health_check_interval > 0 and self.config.check_url is not None:
                self._monitor = asyncio.create_task(self._monitor_health(self.health_check_interval))
            log.info("[%s] ready after %.3fs (pid %s)", self.id, time.monotonic() - started, self.pid)

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully (cmdStop or SIGTERM to the group), SIGKILL after ``grace`` s."""
        async with self._lock:
            if self._proc is None:
                if self._state is ProcessState.FAILED:
                    self._set_state(ProcessState.STOPPED)
                return
            was_ready = self._state is ProcessState.READY
            self._set_state(ProcessState.STOPPING)
            if was_ready and self._warm is not None and self._warm_run is not None:
                await asyncio.shield(self._warm.save(self.id, self._warm_run, self.config.proxy.rstrip("/")))
            await asyncio.shield(self._terminate(self.config.unload_timeout if grace is None else grace))
            self._set_state(ProcessState.STOPPED)

    # ----------------------------------------------------------------- details
    async def _spawn(self) -> None:
        self._take_free_port()
        argv = self.config.argv
        if self._warm is not None:
            argv, self._warm_run = self._warm.plan(self.config)
        env = {**os.environ, **self.config.env_map}
        self.output.clear()
        self._stop_requested = False
        log.info("[%s] starting: %s", self.id, " ".join(redact_argv(argv)))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        except OSError as exc:
            raise StartError(f"failed to start command '{argv[0]}': {exc.strerror or exc}") from exc
        if self._reaper is not None:
            self._reaper.track(self._proc.pid)
        self._reader = asyncio.create_task(self._read_output(self._proc))

    def _take_free_port(self) -> None:
        """Move to the next free port when the one `${PORT}` gave us cannot be listened on.

        Another program holds it (a second instance of the service, a leftover server), or,
        inside the kernel's ephemeral range, an outgoing connection's local end does. Starting
        anyway would fail the model, or worse, pass its health check against a stranger.
        Synchronous from check to move, so two models starting at once never pick one port.
        """
        port = self.config.port
        if port is None:
            return  # a port written in cmd: the user's to keep; the server's own error says so
        hosts = bind_hosts(urlsplit(self.config.proxy).hostname)
        if all(can_bind(host, port) for host in hosts):
            return
        reserved = self._reserved_ports() if self._reserved_ports is not None else set()
        moved = next_free(port, reserved, lambda candidate: all(can_bind(host, candidate) for host in hosts))
        if moved is None:
            raise StartError(f"port {port} is already in use by another program and no free port above it is left")
        log.warning("[%s] port %d is in use by another program; starting on port %d instead", self.id, port, moved)
        self.config = self.config.with_port(moved)

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        """Drain the child's output line by line (a full pipe would block the upstream)."""
        assert proc.stdout is not None
        pending = b""
        while chunk := await proc.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._emit(raw)
            if len(pending) > MAX_LINE:  # e.g. a progress bar redrawn with \r: never grow unbounded
                self._emit(pending)
                pending = b""
        if pending:
            self._emit(pending)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.output.append(line)
        if self._on_output is not None:
            self._on_output(line + "\n")
        upstream_log.info("[%s] %s", self.id, line)

    async def _wait_healthy(self) -> None:
        proc = self._proc
        assert proc is not None
        exited = asyncio.ensure_future(proc.wait())
        probe: asyncio.Task[bool] | None = None
        try:
            if self.config.check_url is None:
                return
            deadline = time.monotonic() + self.health_check_timeout
            interval = FIRST_POLL
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StartError(
                        f"upstream health check timed out after {self.health_check_timeout}s", timed_out=True
                    )
                await asyncio.wait({exited}, timeout=min(interval, remaining))
                if exited.done():
                    raise StartError(await self._exit_message(proc))
                probe = asyncio.ensure_future(self._probe(min(POLL_TIMEOUT, deadline - time.monotonic())))
                await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    probe.cancel()
                    raise StartError(await self._exit_message(proc))
                if probe.result():
                    return
                interval = min(interval * 1.5, MAX_POLL)
        finally:  # an aborted start must not leave these running unreferenced
            exited.cancel()
            if probe is not None:
                probe.cancel()

    async def _probe(self, timeout: float) -> bool:
        assert self.config.check_url is not None
        try:
            async with self._session.get(
                self.config.check_url, timeout=aiohttp.ClientTimeout(total=max(timeout, 0.01))
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def _exit_message(self, proc: asyncio.subprocess.Process) -> str:
        code = await proc.wait()
        if self._reader is not None:  # collect the last lines it printed
            await asyncio.wait({self._reader}, timeout=0.5)
        tail = "\n".join(self.tail())
        message = f"upstream command exited with code {code} before becoming ready"
        return f"{message}; last output:\n{tail}" if tail else message

    async def died(self, within: float) -> bool:
        """Whether the ready upstream has died on its own (and was cleaned up), waiting up
        to ``within`` seconds for its exit to be noticed — a request that lost its
        connection asks this to tell a crash from a slow or faulty answer."""
        watcher = self._watcher
        if watcher is None:
            return False
        await asyncio.wait({watcher}, timeout=within)
        return watcher.done() and not watcher.cancelled() and watcher.exception() is None and watcher.result()

    async def _watch_exit(self) -> bool:
        """Notice an upstream that dies on its own while ready; True if it did."""
        proc = self._proc
        assert proc is not None
        code = await proc.wait()
        return await self._fail_while_ready(proc, f"upstream exited unexpectedly with code {code}", grace=0)

    async def _monitor_health(self, interval: float) -> None:
        """Keep checking a ready upstream: one that stops answering is stopped like a crash,
        so the next request starts it afresh instead of hanging on it."""
        proc = self._proc
        assert proc is not None
        failures = 0
        while failures < HEALTH_FAILURES:
            await asyncio.sleep(interval)
            if await self._probe(min(MAX_CHECK_TIMEOUT, interval)):
                failures = 0
                continue
            failures += 1
            log.warning("[%s] health check failed (%d of %d in a row)", self.id, failures, HEALTH_FAILURES)
        await self._fail_while_ready(
            proc, f"upstream stopped answering its health check ({HEALTH_FAILURES} checks in a row failed)",
            grace=self.config.unload_timeout,
        )

    async def _fail_while_ready(self, proc: asyncio.subprocess.Process, reason: str, *, grace: float) -> bool:
        async with self._lock:
            if self._stop_requested or self._proc is not proc:
                return False
            log.warning("[%s] %s; stopping it (the next request starts it again)", self.id, reason)
            self.last_error = reason
            await self._terminate(grace)
            self._set_state(ProcessState.STOPPED)
        if self._on_crash is not None:
            self._on_crash(self.id)
        return True

    async def _terminate(self, grace: float) -> None:
        """Graceful stop of the whole group, then SIGKILL; always reaps."""
        proc = self._proc
        if proc is None:
            return
        self._stop_requested = True
        pgid = proc.pid
        if proc.returncode is None and grace > 0:
            await self._ask_to_stop(proc)
        deadline = time.monotonic() + grace
        exited = asyncio.ensure_future(proc.wait())
        try:
            while time.monotonic() < deadline and (proc.returncode is None or _group_alive(pgid)):
                if exited.done():  # leader reaped, children left: wait() would return at once
                    await asyncio.sleep(STOP_POLL)
                else:
                    await asyncio.wait({exited}, timeout=STOP_POLL)
        finally:
            exited.cancel()
            # The grace period is over: a cmdStop still running has nothing left to do
            # (SIGKILL follows), so stop waiting on it; the child watcher still reaps it.
            for stopper in self._stoppers:
                stopper.cancel()
        _killpg(pgid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        # SIGKILL is delivered, not yet done: members other than our child (a wrapper's) are
        # not ours to wait() for, so a stop looks until they are gone — then their memory
        # and ports are free for what starts next.
        killed_by = time.monotonic() + KILL_WAIT
        while _group_alive(pgid) and time.monotonic() < killed_by:
            await asyncio.sleep(STOP_POLL)
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=1.0)
            self._reader.cancel()
        for task in (self._watcher, self._monitor):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._reaper is not None:
            self._reaper.forget(pgid)
        self._proc = None
        log.info("[%s] stopped (pid %s, exit code %s)", self.id, pgid, proc.returncode)

    async def _ask_to_stop(self, proc: asyncio.subprocess.Process) -> None:
        """cmdStop with ${PID} substituted if configured, else SIGTERM to the group."""
        stop_argv = [arg.replace("${PID}", str(proc.pid)) for arg in self.config.stop_argv]
        if not stop_argv:
            _killpg(proc.pid, signal.SIGTERM)
            return
        try:
            stopper = await asyncio.create_subprocess_exec(
                *stop_argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, **self.config.env_map},
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("[%s] cmdStop failed (%s); sending SIGTERM", self.id, exc)
            _killpg(proc.pid, signal.SIGTERM)
            return
        waiter = asyncio.ensure_future(stopper.wait())  # in the background; never blocks a stop
        self._stoppers.add(waiter)
        waiter.add_done_callback(self._stoppers.discard)

    def _set_state(self, state: ProcessState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_state is not None:
            self._on_state(self.id, state)
