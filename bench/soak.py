"""Soak test: many clients, three models in one swap group, upstreams killed at random.

Usage: `bench/soak [--minutes M | --seconds S] [--clients N] [--kill-every LO-HI] [--out FILE]`
(or `.venv/bin/python -m bench.soak …`); `tests/soak/test_soak_short.py` runs it for ~40 s.

It starts llama-swap (a subprocess on 127.0.0.1, a free port) with three models — `alpha`,
`beta`, `gamma` — in one swap group (one runs at a time, so traffic across them swaps
constantly), each served by the fake upstream (`tests/fakes/fake_upstream.py`) under a name
unique to this run. For the given time, `--clients` coroutines send chat completions, half
streamed, each to a random model with a random length and a per-request fingerprint (prompt
size, chunk count), while a chaos task SIGKILLs the running upstream (pid from `/health`,
checked to be this service's child running the fake) every few seconds.

Every request gets exactly one outcome:

- `ok`: the answer is complete and is the one asked for — `X-Upstream-Name`, the `upstream`
  field of the JSON body or of every stream chunk, the content, the echoed `model`, the token
  counts (which encode this request's prompt size and chunk count) and the upstream pid in the
  completion id all match;
- clear errors: `http_error` (a non-200 status with a JSON `{"error": …}` body) or
  `stream_error` (a 200 stream whose last event is a `data: {"error": …}` event);
- violations: `crossed` (another model's or another request's answer), `truncated` (a 200
  stream that ended without `[DONE]` or an error event), `broken` (the connection died under a
  200 answer with no error event), `unclear_error` (an error status without a JSON error
  body), `transport` (no HTTP answer at all: refused, reset), `hang` (no outcome within
  `--timeout`), `garbled` (anything else malformed), `lost` (a request that never got an
  outcome).

Also checked: the service stays up; its open file descriptors and RSS (sampled every second)
stay within bounds after warm-up; after the load, nothing is left in `/api/inflight`, every
model answers correctly again, and once everything is unloaded the service's fd count is back
near its idle count; after SIGTERM it exits 0 within its budget and no upstream (nor any other
process it started) survives — every pid seen during the run is checked, and the process list
is scanned for this run's unique upstream names. Prints a summary table, writes JSON
(`bench/results/soak.json`), and exits 1 on any violation (2 if the service cannot start).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import os
import random
import re
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench import procs
from tests.fakes import fake_argv, is_alive

RESULTS = procs.REPO / "bench" / "results"
LLAMA_SWAP = procs.VENV_BIN / "llama-swap"
MODELS = ("alpha", "beta", "gamma")
RESPOND = "hello"  # the fake's content is f"{RESPOND} from {name}"
CLEAR = ("http_error", "stream_error")
VIOLATIONS = ("crossed", "truncated", "broken", "unclear_error", "transport", "hang", "garbled", "lost")
KINDS = ("ok", *CLEAR, *VIOLATIONS)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: ignore *_proxy
_TIME_OF_DAY = re.compile(r"\b(\d\d):(\d\d):(\d\d)\.(\d{3})\b")


@dataclass
class Options:
    """One soak run."""

    seconds: float = 300.0
    clients: int = 64
    kill_every: tuple[float, float] = (2.0, 5.0)  # seconds between kills, uniformly at random
    kill_starting: bool = False  # also kill upstreams that are starting (not only ready ones)
    timeout: float = 60.0  # per request: no outcome within it is a hang
    stream_share: float = 0.5
    max_chunks: int = 24
    max_outage: float | None = None  # a model without an ok answer for longer is a violation (None: reported only)
    fd_bound: int = 50  # open fds may exceed their warm-up maximum by this much
    idle_fd_bound: int = 10  # growth allowed for non-socket fds over warm-up, and for all fds once idle again
    rss_bound_mb: float = 50.0  # RSS may exceed its warm-up maximum by this much
    warmup: float | None = None  # default: 15 % of the run, 5–30 s
    limit: int | None = None  # each model's concurrencyLimit (default: --clients, so no 429s)
    out: Path | None = RESULTS / "soak.json"
    workdir: Path = RESULTS / "soak"
    seed: int | None = None
    progress: bool = True

    @property
    def warmup_seconds(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return min(30.0, max(5.0, 0.15 * self.seconds))


@dataclass
class Outcome:
    """What one request got."""

    rid: int
    model: str
    stream: bool
    kind: str
    started: float  # wall clock (time.time())
    seconds: float
    status: int | None = None
    detail: str = ""
    upstream: str | None = None  # X-Upstream-Name
    pid: int | None = None  # X-Upstream-Pid


@dataclass
class Sample:
    """The service's resources at one moment."""

    t: float  # seconds since the load began
    phase: str  # idle, warmup, load, after
    fds: int  # open file descriptors: all of them, then by kind
    client_sockets: int  # TCP connections of clients to the service
    upstream_sockets: int  # TCP connections from the service to the upstreams
    other_sockets: int  # the listening socket; connections reset by a killed upstream, until closed, …
    other_fds: int  # the fds that are not sockets: pipes, the log, epoll, … (should not grow at all)
    rss_mb: float


@dataclass
class Run:
    """Everything one run gathers; `report()` turns it into the JSON."""

    options: Options
    names: dict[str, str]  # model -> the fake upstream's name (unique to this run)
    service_pid: int = 0
    port: int = 0  # the service's
    upstream_ports: set[int] = field(default_factory=set)
    log_path: Path | None = None
    started: int = 0
    in_flight: dict[int, tuple[str, bool, float]] = field(default_factory=dict)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    by_model: dict[str, collections.Counter[str]] = field(default_factory=dict)
    by_mode: dict[str, collections.Counter[str]] = field(default_factory=dict)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    seen: dict[int, psutil.Process | None] = field(default_factory=dict)  # pids of everything the service ran
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # run-level violations (not per request)
    ok_at: dict[str, list[float]] = field(default_factory=dict)  # model -> when its ok answers ended
    chaos_misses: int = 0  # /health polls that found no upstream to kill
    load_began: float = 0.0
    load_seconds: float = 0.0

    def record(self, outcome: Outcome) -> None:
        self.in_flight.pop(outcome.rid, None)
        self.counts[outcome.kind] += 1
        self.by_model.setdefault(outcome.model, collections.Counter())[outcome.kind] += 1
        self.by_mode.setdefault("stream" if outcome.stream else "plain", collections.Counter())[outcome.kind] += 1
        if outcome.kind == "ok":
            self.latencies.append(outcome.seconds)
            if outcome.rid:  # not the checks after the load
                self.ok_at.setdefault(outcome.model, []).append(time.monotonic())
        elif outcome.kind in CLEAR:
            self.errors[f"{outcome.status} {_normalise(outcome.detail)}"] += 1
        else:
            self.violations.append(asdict(outcome))
        if outcome.pid:
            self.remember(outcome.pid)

    def remember(self, pid: int) -> None:
        """Note a process the service ran, to check at the end that it is gone."""
        if pid in self.seen:
            return
        try:
            self.seen[pid] = psutil.Process(pid)  # keeps its start time: a reused pid is not it
        except psutil.Error:
            self.seen[pid] = None  # already gone


def _normalise(message: str) -> str:
    """An error message with numbers and this run's names generalised, for counting kinds."""
    message = re.sub(r"-soak[0-9a-f]+", "", message)
    return re.sub(r"\d+(\.\d+)?", "N", message)[:160]


# --------------------------------------------------------------------------- the service


def write_config(path: Path, names: dict[str, str], ports: dict[str, int], limit: int) -> None:
    """Three fake upstreams on fixed ports in one swap group; timestamps to line up with requests."""
    config = {
        "logLevel": "info",
        "logTimeFormat": "stampmilli",
        "logToStdout": "both",
        "healthCheckTimeout": 30,
        "models": {
            model: {
                "cmd": shlex.join(fake_argv(ports[model], names[model], respond=RESPOND)),
                "proxy": f"http://127.0.0.1:{ports[model]}",
                "concurrencyLimit": limit,
            }
            for model in names
        },
        "routing": {"router": {"settings": {"groups": {"soak": {"swap": True, "members": list(names)}}}}},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


def upstream_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range, so no outgoing connection (of the clients, the
    service, anyone) takes one while its model is stopped — the upstream could not listen."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def http_json(url: str, method: str = "GET", timeout: float = 10.0) -> Any:
    """A management call; the decoded JSON (of an error answer too)."""
    request = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"null")


def sample(run: Run, proc: psutil.Process, phase: str) -> Sample:
    """Count the service's fds by kind (sockets by their peer), and its RSS."""
    sockets = other = 0
    fd_dir = f"/proc/{proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            sockets += 1
        else:
            other += 1
    clients = upstreams = 0
    for conn in proc.net_connections(kind="tcp"):
        if conn.raddr and conn.laddr.port == run.port:
            clients += 1
        elif conn.raddr and conn.raddr.port in run.upstream_ports:
            upstreams += 1
    rss = round(proc.memory_info().rss / 2**20, 1)
    s = Sample(
        round(time.monotonic() - run.load_began, 2),
        phase,
        sockets + other,
        clients,
        upstreams,
        max(0, sockets - clients - upstreams),
        other,
        rss,
    )
    run.samples.append(s)
    return s


# --------------------------------------------------------------------------- one request


def make_request(rid: int, model: str, rng: random.Random, options: Options) -> tuple[dict[str, Any], int, int]:
    """A chat body and its fingerprint: (body, expected prompt tokens, chunks)."""
    messages = [{"role": "user", "content": f"soak request {rid} " + "x" * rng.randrange(0, 400)}]
    chunks = rng.randint(1, options.max_chunks)
    stream = rng.random() < options.stream_share
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": stream,
        "max_tokens": chunks,
        "n_chunks": chunks,  # the fake's per-request switches
        "chunk_delay": rng.choice((0.0, 0.005, 0.02, 0.05)) if stream else 0.0,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    # The fake counts prompt tokens as len(json.dumps(messages, sort_keys=True)) // 4.
    prompt_tokens = max(1, len(json.dumps(messages, sort_keys=True)) // 4)
    return body, prompt_tokens, chunks


class Verdict(Exception):
    """A request's outcome, decided part-way through reading it."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


async def send(
    session: aiohttp.ClientSession,
    url: str,
    run: Run,
    rid: int,
    model: str,
    body: dict[str, Any],
    prompt_tokens: int,
    chunks: int,
) -> Outcome:
    """Send one request and classify what came back; never raises (but for cancellation)."""
    stream = bool(body["stream"])
    outcome = Outcome(rid, model, stream, "garbled", time.time(), 0.0)
    started = time.monotonic()
    try:
        async with asyncio.timeout(run.options.timeout):
            async with session.post(url, json=body) as response:
                outcome.status = response.status
                outcome.upstream = response.headers.get("X-Upstream-Name")
                pid = response.headers.get("X-Upstream-Pid", "")
                outcome.pid = int(pid) if pid.isdigit() else None
                if response.status != 200:
                    outcome.kind, outcome.detail = await _error_answer(response)
                elif stream:
                    outcome.kind, outcome.detail = await _stream_answer(response, run, outcome, prompt_tokens, chunks)
                else:
                    outcome.kind, outcome.detail = await _plain_answer(response, run, outcome, prompt_tokens, chunks)
    except Verdict as verdict:
        outcome.kind, outcome.detail = verdict.kind, verdict.detail
    except aiohttp.ClientError as error:  # before TimeoutError: aiohttp's connect timeout is both
        # Before any status: the service refused or dropped the connection. After a 200: the
        # answer broke off without an error event (a non-SSE body cut short is detectable,
        # but the fake's plain answers are one small write, so it should not happen either).
        kind = "transport" if outcome.status is None else "broken"
        outcome.kind, outcome.detail = kind, f"{type(error).__name__}: {error}"
    except TimeoutError:
        outcome.kind, outcome.detail = "hang", f"no outcome within {run.options.timeout:.0f} s"
    except Exception as error:  # noqa: BLE001 - every request must get an outcome
        outcome.kind, outcome.detail = "garbled", f"{type(error).__name__}: {error}"
    outcome.seconds = time.monotonic() - started
    return outcome


async def _error_answer(response: aiohttp.ClientResponse) -> tuple[str, str]:
    raw = await response.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else error
        return "http_error", str(message)[:300]
    return "unclear_error", f"{response.content_type}: {raw[:300]!r}"


def _identity(run: Run, model: str, outcome: Outcome, claimed: Any, where: str) -> None:
    """Raise `crossed` unless `claimed` (a name the answer carries) is the asked-for model's."""
    expected = run.names[model]
    if claimed == expected:
        return
    other = next((m for m, name in run.names.items() if name == claimed), None)
    who = f"model {other!r}" if other else f"{claimed!r}"
    raise Verdict("crossed", f"asked {model!r}, {where} says {who}")


async def _plain_answer(
    response: aiohttp.ClientResponse, run: Run, outcome: Outcome, prompt_tokens: int, chunks: int
) -> tuple[str, str]:
    raw = await response.read()
    try:
        data = json.loads(raw)
    except ValueError:
        return "garbled", f"200 without a JSON body: {raw[:300]!r}"
    model = outcome.model
    _identity(run, model, outcome, outcome.upstream, "X-Upstream-Name")
    _identity(run, model, outcome, data.get("upstream"), "the body's upstream field")
    try:
        content = data["choices"][0]["message"]["content"]
        usage = data["usage"]
        answer_id = data["id"]
    except (KeyError, IndexError, TypeError):
        return "garbled", f"not a chat completion: {raw[:300]!r}"
    mismatches = []
    if content != f"{RESPOND} from {run.names[model]}":
        mismatches.append(f"content {content!r}")
    if data.get("model") != model:
        mismatches.append(f"model {data.get('model')!r}")
    if usage.get("prompt_tokens") != prompt_tokens or usage.get("completion_tokens") != chunks:
        mismatches.append(f"usage {usage} (expected prompt {prompt_tokens}, completion {chunks})")
    if outcome.pid is not None and not str(answer_id).startswith(f"chatcmpl-{outcome.pid}"):
        mismatches.append(f"id {answer_id!r} is not from pid {outcome.pid}")
    if mismatches:
        return "crossed", "another request's answer? " + "; ".join(mismatches)
    return "ok", ""


async def _stream_answer(
    response: aiohttp.ClientResponse, run: Run, outcome: Outcome, prompt_tokens: int, chunks: int
) -> tuple[str, str]:
    if response.content_type != "text/event-stream":
        raw = await response.read()
        return "garbled", f"200 {response.content_type} to a streamed request: {raw[:300]!r}"
    model = outcome.model
    _identity(run, model, outcome, outcome.upstream, "X-Upstream-Name")
    text: list[str] = []
    usage: dict[str, Any] | None = None
    finish = None
    done = False
    error: str | None = None
    after_end = 0  # events after [DONE] or an error event
    events = 0
    async for line in response.content:
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data:"):
            if line.startswith(b"event:") and b"error" in line:
                error = error or line.decode(errors="replace")
            continue
        payload = line[5:].strip()
        events += 1
        if done or error is not None:
            after_end += 1
        if payload == b"[DONE]":
            done = True
            continue
        try:
            data = json.loads(payload)
        except ValueError:
            raise Verdict("garbled", f"event {events} is not JSON: {payload[:200]!r}") from None
        if "error" in data:
            message = data["error"].get("message") if isinstance(data["error"], dict) else data["error"]
            error = str(message)[:300]
            continue
        _identity(run, model, outcome, data.get("upstream"), f"chunk {events}")
        if data.get("model") != model:
            raise Verdict("crossed", f"asked {model!r}, chunk {events} names model {data.get('model')!r}")
        if data.get("usage"):
            usage = data["usage"]
        for choice in data.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
    if error is not None:
        if after_end:
            return "garbled", f"{after_end} events after the error event: {error}"
        return "stream_error", error
    if not done:
        return "truncated", f"200 stream ended after {events} events without [DONE] or an error event"
    if after_end:
        return "garbled", f"{after_end} events after [DONE]"
    expected = "".join(f"tok{i} " for i in range(chunks))
    mismatches = []
    if "".join(text) != expected:
        mismatches.append(f"content {''.join(text)[:120]!r} (expected {chunks} chunks)")
    if finish != "stop":
        mismatches.append(f"finish_reason {finish!r}")
    if not usage or usage.get("prompt_tokens") != prompt_tokens or usage.get("completion_tokens") != chunks:
        mismatches.append(f"usage {usage} (expected prompt {prompt_tokens}, completion {chunks})")
    if mismatches:
        return "crossed", "another request's answer? " + "; ".join(mismatches)
    return "ok", ""


# --------------------------------------------------------------------------- the tasks


async def client(
    session: aiohttp.ClientSession, url: str, run: Run, rng: random.Random, deadline: float, ids: Any
) -> None:
    """One client: requests back to back until the deadline (a short pause after an error)."""
    while time.monotonic() < deadline:
        rid = next(ids)
        model = rng.choice(list(run.names))
        body, prompt_tokens, chunks = make_request(rid, model, rng, run.options)
        run.started += 1
        run.in_flight[rid] = (model, bool(body["stream"]), time.time())
        outcome = await send(session, url, run, rid, model, body, prompt_tokens, chunks)
        run.record(outcome)
        await asyncio.sleep(0.2 if outcome.kind != "ok" else rng.uniform(0, 0.01))


async def chaos(base: str, run: Run, service: psutil.Process, rng: random.Random, stop: asyncio.Event) -> None:
    """SIGKILL an upstream every few seconds — only a child of this service running the fake.

    The target is the ready upstream (`running` in `/health`; with `kill_starting`, one that
    is starting qualifies too). Swaps leave moments with none: then `/health` is asked again
    every 50 ms until there is one.
    """
    low, high = run.options.kill_every
    states = ("running", "starting") if run.options.kill_starting else ("running",)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(low, high))
            return
        misses = 0
        while not stop.is_set():
            try:
                health = await asyncio.to_thread(http_json, base + "/health", "GET", 5.0)
            except OSError as error:
                run.problems.append(f"GET /health failed during the run: {error}")
                break
            targets = [
                (m, e["pid"], e["status"])
                for m, e in health.get("models", {}).items()
                if e.get("status") in states and e.get("pid")
            ]
            if targets and await asyncio.to_thread(_kill, run, service, *rng.choice(targets)):
                break
            misses += 1
            await asyncio.sleep(0.05)
        run.chaos_misses += misses


def _kill(run: Run, service: psutil.Process, model: str, pid: int, status: str) -> bool:
    """SIGKILL `pid` if it is the service's child running `model`'s fake; whether it was killed."""
    try:
        victim = psutil.Process(pid)
        if victim.ppid() != service.pid or run.names[model] not in victim.cmdline():
            return False  # gone already, or not what we think it is: never kill a stranger
    except psutil.Error:
        return False
    run.remember(pid)
    try:
        victim.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused meanwhile
    except psutil.Error:
        return False
    run.kills.append({"t": round(time.monotonic() - run.load_began, 2), "model": model, "pid": pid, "state": status})
    return True


async def monitor(
    base: str, run: Run, service: psutil.Process, popen: subprocess.Popen[bytes], stop: asyncio.Event
) -> None:
    """Every second: the service is alive; its fds and RSS; the processes it runs."""
    warmup_end = run.load_began + run.options.warmup_seconds
    next_progress = time.monotonic() + 10
    while not stop.is_set():
        if popen.poll() is not None:
            run.problems.append(f"the service exited during the run (status {popen.returncode})")
            return
        with contextlib.suppress(psutil.Error, OSError):
            sample(run, service, "warmup" if time.monotonic() < warmup_end else "load")
            for child in service.children(recursive=True):
                run.remember(child.pid)
        if run.options.progress and time.monotonic() >= next_progress:
            next_progress += 10
            last = run.samples[-1] if run.samples else None
            bad = sum(run.counts[k] for k in VIOLATIONS)
            print(
                f"soak: {time.monotonic() - run.load_began:5.0f} s  {sum(run.counts.values())} answered "
                f"({run.counts['ok']} ok, {run.counts['http_error'] + run.counts['stream_error']} clear errors, "
                f"{bad} violations), {len(run.kills)} kills"
                + (f", fds {last.fds}, rss {last.rss_mb} MB" if last else ""),
                file=sys.stderr,
                flush=True,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def load(base: str, run: Run, service: psutil.Process, popen: subprocess.Popen[bytes]) -> None:
    """The clients, the chaos and the monitor, for the run's duration; then every request's end."""
    options = run.options
    rng = random.Random(options.seed)
    ids = iter(range(1, 10**9))
    stop = asyncio.Event()
    run.load_began = time.monotonic()
    deadline = run.load_began + options.seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
    ) as session:
        url = base + "/v1/chat/completions"
        clients = [
            asyncio.create_task(client(session, url, run, random.Random(rng.random()), deadline, ids))
            for _ in range(options.clients)
        ]
        helpers = [
            asyncio.create_task(chaos(base, run, service, random.Random(rng.random()), stop)),
            asyncio.create_task(monitor(base, run, service, popen, stop)),
        ]
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        stop.set()  # no more kills; the clients finish the request they are in
        _, pending = await asyncio.wait(clients, timeout=options.timeout + 15)
        for task in pending:
            task.cancel()
        await asyncio.gather(*clients, *helpers, return_exceptions=True)
    run.load_seconds = time.monotonic() - run.load_began
    for rid, (model, stream, started) in sorted(run.in_flight.items()):
        run.record(Outcome(rid, model, stream, "lost", started, time.time() - started, detail="never got an outcome"))


# --------------------------------------------------------------------------- after the load


def check_after(base: str, run: Run, service: psutil.Process) -> None:
    """Nothing stuck in flight; every model serves again; fds back to idle once unloaded."""
    checks = run.checks
    deadline = time.monotonic() + 10
    inflight: list[Any] = []
    while time.monotonic() < deadline:
        inflight = http_json(base + "/api/inflight").get("requests", [])
        if not inflight:
            break
        time.sleep(0.2)
    checks["inflight_after_load"] = len(inflight)
    if inflight:
        run.problems.append(f"{len(inflight)} requests still in /api/inflight 10 s after the load: {inflight[:3]}")
    answers = {}
    for model in run.names:
        # An explicit load bypasses the crash back-off, which the kills have likely armed.
        loaded = http_json(f"{base}/upstream/{model}/load", timeout=40)
        answers[model] = asyncio.run(_final_requests(base, run, model))
        if answers[model] != ["ok", "ok"]:
            run.problems.append(f"after the load, {model} answered {answers[model]} (load: {loaded})")
    checks["final_requests"] = answers
    checks["running_before_unload"] = http_json(base + "/running").get("running")
    http_json(base + "/api/models/unload", "POST", timeout=40)
    time.sleep(5.0)  # pooled upstream connections are kept 4 s
    idle = [s for s in run.samples if s.phase == "idle"]
    after = sample(run, service, "after")
    checks["fds_idle_before"] = idle[-1].fds if idle else None
    checks["fds_idle_after"] = after.fds
    if idle and after.fds > idle[-1].fds + run.options.idle_fd_bound:
        run.problems.append(
            f"fd leak: {after.fds} open fds once idle after the load, {idle[-1].fds} before it "
            f"(bound +{run.options.idle_fd_bound})"
        )


async def _final_requests(base: str, run: Run, model: str) -> list[str]:
    kinds = []
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            body = {"model": model, "messages": [{"role": "user", "content": "final"}], "stream": stream, "n_chunks": 3}
            if stream:
                body["stream_options"] = {"include_usage": True}
            prompt_tokens = max(1, len(json.dumps(body["messages"], sort_keys=True)) // 4)
            outcome = await send(session, base + "/v1/chat/completions", run, 0, model, body, prompt_tokens, 3)
            kinds.append(outcome.kind if outcome.kind == "ok" else f"{outcome.kind}: {outcome.status} {outcome.detail}")
    return kinds


def check_resources(run: Run) -> dict[str, Any]:
    """fds and RSS: idle / first / warm-up max / last / max, and whether they stayed within bounds.

    The bounds are over the warm-up maximum: all fds +`fd_bound` (sockets come and go with
    the traffic, at most about two per client), the fds that are not TCP sockets (pipes,
    files) +`idle_fd_bound`, RSS +`rss_bound_mb`. Socket counts are reported without a bound
    of their own.
    """
    options = run.options
    during = [s for s in run.samples if s.phase in ("warmup", "load")]
    warm = [s for s in during if s.phase == "warmup"] or during[:1]
    later = [s for s in during if s.phase == "load"]
    idle = next((s for s in run.samples if s.phase == "idle"), None)
    out: dict[str, Any] = {}
    for key, bound, unit in (
        ("fds", options.fd_bound, ""),
        ("other_fds", options.idle_fd_bound, ""),
        ("client_sockets", None, ""),
        ("upstream_sockets", None, ""),
        ("other_sockets", None, ""),
        ("rss_mb", options.rss_bound_mb, " MB"),
    ):
        if not during:
            break
        values = [getattr(s, key) for s in during]
        baseline = max(getattr(s, key) for s in warm)
        peak_after = max((getattr(s, key) for s in later), default=baseline)
        out[key] = {
            "idle": getattr(idle, key) if idle else None,
            "first": values[0],
            "warmup_max": baseline,
            "last": values[-1],
            "max": max(values),
            "max_after_warmup": peak_after,
            "bound": f"+{bound}{unit}" if bound is not None else None,
        }
        if bound is not None and peak_after > baseline + bound:
            run.problems.append(
                f"{key} grew from {baseline}{unit} (warm-up max) to {peak_after}{unit} (bound +{bound}{unit})"
            )
    return out


def outages(run: Run) -> dict[str, dict[str, float]]:
    """Per model, the longest time during the load without an ok answer, and when it began."""
    end = run.load_began + run.load_seconds
    out = {}
    for model in run.names:
        times = [run.load_began, *sorted(run.ok_at.get(model, ())), end]
        gap, at = max((b - a, a) for a, b in zip(times, times[1:]))
        out[model] = {"longest_without_ok_s": round(gap, 1), "from_s": round(at - run.load_began, 1)}
        if run.options.max_outage is not None and gap > run.options.max_outage:
            run.problems.append(
                f"{model} gave no ok answer for {gap:.1f} s (from {at - run.load_began:.1f} s into the load; "
                f"bound {run.options.max_outage:.0f} s)"
            )
    return out


def stop_and_check_orphans(popen: subprocess.Popen[bytes], run: Run, grace: float = 40.0) -> None:
    """SIGTERM the service; every process it ran must then be gone (killed by pid if not)."""
    started = time.monotonic()
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        code = popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        code = None
        run.problems.append(f"the service did not exit within {grace:.0f} s of SIGTERM")
    run.checks["service_exit"] = {"status": code, "seconds": round(time.monotonic() - started, 2)}
    if code not in (0, None):
        run.problems.append(f"the service exited with status {code} after SIGTERM")
    procs.stop(popen, grace=1)  # whatever is left in its group; reaps it
    survivors: dict[int, str] = {}
    deadline = time.monotonic() + 5  # orphans are reaped by init a moment later
    for pid, process in run.seen.items():
        while process is not None and _alive(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process is not None and _alive(process):
            survivors[pid] = " ".join(_cmdline(process))[:200]
    tokens = list(run.names.values())
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if any(token in cmdline for token in tokens) and _alive(process):
            survivors.setdefault(process.pid, cmdline[:200])
    run.checks["processes_seen"] = len(run.seen)
    run.checks["survivors"] = survivors
    if survivors:
        run.problems.append(f"{len(survivors)} processes survived the service: {survivors}")
        procs.kill_pids(sorted(survivors))


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and is_alive(process.pid) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


# --------------------------------------------------------------------------- the report


def log_excerpt(path: Path | None, started: float, seconds: float, names: list[str], limit: int = 40) -> list[str]:
    """Service log lines from a second before a request to a second after it ended."""
    if path is None or not path.exists():
        return []
    begin = _time_of_day(started - 1.0)
    end = _time_of_day(started + seconds + 1.0)
    lines = []
    with path.open(errors="replace") as log:
        for line in log:
            match = _TIME_OF_DAY.search(line)
            if not match:
                continue
            h, m, s, ms = (int(x) for x in match.groups())
            t = h * 3600 + m * 60 + s + ms / 1000
            if begin <= t <= end and (
                not names or any(n in line for n in names) or "[WARN]" in line or "[ERROR]" in line
            ):
                lines.append(line.rstrip("\n"))
    return lines[:limit] + ([f"… {len(lines) - limit} more lines"] if len(lines) > limit else [])


def _time_of_day(t: float) -> float:
    local = datetime.datetime.fromtimestamp(t)
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def report(run: Run) -> dict[str, Any]:
    options = run.options
    resources = check_resources(run)
    availability = outages(run)
    answered = sum(run.counts.values())
    clear = sum(run.counts[k] for k in CLEAR)
    latencies = sorted(run.latencies)
    violations = run.violations[:50]
    for v in violations[:10]:  # the service's side of the first few
        v["log"] = log_excerpt(run.log_path, v["started"], v["seconds"], [v["model"], run.names[v["model"]]])
    lost = run.started - answered
    problems = list(run.problems)
    if lost:
        problems.append(f"{lost} requests were started but never got an outcome")
    kills = run.kills
    return {
        "meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "seconds": round(run.load_seconds, 1),
            "clients": options.clients,
            "kill_every": list(options.kill_every),
            "kill_starting": options.kill_starting,
            "timeout": options.timeout,
            "warmup": options.warmup_seconds,
            "seed": options.seed,
            "cpus": len(os.sched_getaffinity(0)),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "log": str(run.log_path) if run.log_path else None,
            "upstream_names": run.names,
        },
        "requests": {
            "started": run.started,
            "answered": answered,
            "per_second": round(answered / run.load_seconds, 1) if run.load_seconds else 0,
            **{kind: run.counts[kind] for kind in KINDS},
            "clear_error_ratio": round(clear / answered, 4) if answered else 0,
            "by_model": {m: dict(c) for m, c in sorted(run.by_model.items())},
            "by_mode": {m: dict(c) for m, c in sorted(run.by_mode.items())},
        },
        "latency_ok_s": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
        },
        "availability": availability,
        "clear_errors": dict(run.errors.most_common(15)),
        "kills": {
            "count": len(kills),
            "by_state": dict(collections.Counter(k["state"] for k in kills)),
            "polls_without_target": run.chaos_misses,
            "list": kills,
        },
        "resources": resources,
        "checks": run.checks,
        "violation_count": sum(run.counts[k] for k in VIOLATIONS) + len(problems),
        "problems": problems,
        "violations": violations,
        "samples": [asdict(s) for s in run.samples],
    }


def print_summary(result: dict[str, Any], out: Any = sys.stdout) -> None:
    r = result["requests"]
    meta = result["meta"]

    def row(label: str, value: Any) -> None:
        print(f"  {label:<34} {value}", file=out)

    print(
        f"\nsoak: {meta['seconds']} s, {meta['clients']} clients, kills every {meta['kill_every'][0]}–{meta['kill_every'][1]} s",
        file=out,
    )
    row("requests answered (started)", f"{r['answered']} ({r['started']}), {r['per_second']}/s")
    row("ok", r["ok"])
    row("clear errors: HTTP status + JSON", r["http_error"])
    row("clear errors: SSE error event", r["stream_error"])
    row("clear error ratio", f"{100 * r['clear_error_ratio']:.2f} %")
    for kind in VIOLATIONS:
        row(f"VIOLATION {kind}", r[kind])
    for mode, counts in r["by_mode"].items():
        row(f"{mode}", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for model, counts in r["by_model"].items():
        row(f"model {model}", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lat = result["latency_ok_s"]
    row("latency of ok answers (s)", f"p50 {lat['p50']}, p95 {lat['p95']}, max {lat['max']}")
    for model, gap in result["availability"].items():
        row(f"{model}: longest without an ok", f"{gap['longest_without_ok_s']} s (from {gap['from_s']} s)")
    kills = result["kills"]
    row("upstreams killed", f"{kills['count']} {kills['by_state']} ({kills['polls_without_target']} polls found none)")
    for key, res in result["resources"].items():
        bound = f" (bound {res['bound']} over warm-up max)" if res["bound"] else ""
        row(
            f"service {key}",
            f"idle {res['idle']}, first {res['first']}, warm-up max {res['warmup_max']}, last {res['last']}, "
            f"max {res['max']}{bound}",
        )
    checks = result["checks"]
    if "fds_idle_after" in checks:
        row("service fds idle before / after", f"{checks['fds_idle_before']} / {checks['fds_idle_after']}")
    if "service_exit" in checks:
        row("SIGTERM: exit status, seconds", f"{checks['service_exit']['status']}, {checks['service_exit']['seconds']}")
    if "processes_seen" in checks:
        row("processes seen / survivors", f"{checks['processes_seen']} / {len(checks['survivors'])}")
    if result["clear_errors"]:
        print("  clear errors by message:", file=out)
        for message, count in result["clear_errors"].items():
            print(f"    {count:6d}  {message}", file=out)
    for problem in result["problems"]:
        print(f"  PROBLEM: {problem}", file=out)
    for v in result["violations"][:10]:
        print(f"  VIOLATION #{v['rid']} {v['kind']}: {v['model']} stream={v['stream']} status={v['status']} "
              f"upstream={v['upstream']} after {v['seconds']:.2f} s: {v['detail']}", file=out)  # fmt: skip
        for line in v.get("log", [])[:15]:
            print(f"      | {line}", file=out)
    verdict = "PASS" if result["violation_count"] == 0 else f"FAIL ({result['violation_count']} violations)"
    print(f"  {verdict}", file=out, flush=True)


# --------------------------------------------------------------------------- entry points


def run(options: Options) -> dict[str, Any]:
    """One soak run; returns the report (also written to `options.out` when set)."""
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    token = f"soak{secrets.token_hex(4)}"
    names = {model: f"{model}-{token}" for model in MODELS}
    runinfo = Run(options, names)
    ports = dict(zip(MODELS, upstream_ports(len(MODELS)), strict=True))
    config = workdir / "soak.yaml"
    runinfo.log_path = workdir / "service.log"
    runinfo.log_path.unlink(missing_ok=True)
    write_config(config, names, ports, options.limit or options.clients)
    port = runinfo.port = procs.free_port()
    runinfo.upstream_ports = set(ports.values())
    base = f"http://127.0.0.1:{port}"
    popen = procs.spawn(
        [str(LLAMA_SWAP), "-config", str(config), "-listen", f"127.0.0.1:{port}"],
        log=runinfo.log_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        try:
            procs.wait_healthy("127.0.0.1", port, "/health", timeout=30, poll=0.05, proc=popen)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"llama-swap did not start: {error}\n{procs.tail(runinfo.log_path)}") from None
        service = psutil.Process(popen.pid)
        runinfo.service_pid = popen.pid
        time.sleep(0.5)
        runinfo.load_began = time.monotonic()
        sample(runinfo, service, "idle")
        for child in service.children(recursive=True):
            runinfo.remember(child.pid)  # the reaper
        _run_async(load(base, runinfo, service, popen))
        if popen.poll() is None:
            check_after(base, runinfo, service)
    finally:
        stop_and_check_orphans(popen, runinfo)
    result = report(runinfo)
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    pair = (float(low), float(high or low))
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError("expected LOW-HIGH seconds, 0 < LOW <= HIGH")
    return pair


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/soak", description="llama-swap soak test: clients, swaps and upstream kills"
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long the load runs (default 5)")
    length.add_argument("--seconds", type=float, help="how long the load runs, in seconds")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument(
        "--kill-every",
        type=_interval,
        default=(2.0, 5.0),
        metavar="LOW-HIGH",
        help="seconds between SIGKILLs of the running upstream, at random in this range (default 2-5)",
    )
    p.add_argument("--kill-starting", action="store_true", help="also kill upstreams while they start")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request limit; beyond it is a hang (default 60)")
    p.add_argument(
        "--max-outage",
        type=float,
        default=None,
        help="fail if a model gives no ok answer for this many seconds (default: only reported)",
    )
    p.add_argument("--fd-bound", type=int, default=50, help="allowed fd growth over the warm-up maximum (default 50)")
    p.add_argument(
        "--rss-bound", type=float, default=50.0, help="allowed RSS growth over the warm-up maximum, MB (default 50)"
    )
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (default 15%% of the run, 5-30)")
    p.add_argument("--limit", type=int, default=None, help="each model's concurrencyLimit (default: --clients)")
    p.add_argument("--seed", type=int, default=None, help="seed for the clients' and the chaos's choices")
    p.add_argument(
        "--out", type=Path, default=RESULTS / "soak.json", help="JSON report (default bench/results/soak.json)"
    )
    p.add_argument(
        "--workdir", type=Path, default=RESULTS / "soak", help="config and service log (default bench/results/soak)"
    )
    args = p.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else 5.0
    return Options(
        seconds=args.seconds if args.seconds is not None else 60 * minutes,
        clients=args.clients,
        kill_every=args.kill_every,
        kill_starting=args.kill_starting,
        timeout=args.timeout,
        max_outage=args.max_outage,
        fd_bound=args.fd_bound,
        rss_bound_mb=args.rss_bound,
        warmup=args.warmup,
        limit=args.limit,
        seed=args.seed,
        out=args.out,
        workdir=args.workdir,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    procs.exit_on_sigterm()
    procs.raise_fd_limit()
    try:
        result = run(options)
    except RuntimeError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    print_summary(result)
    if options.out is not None:
        print(f"  report: {options.out}", flush=True)
    return 0 if result["violation_count"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
