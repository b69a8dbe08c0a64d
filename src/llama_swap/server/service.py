"""The running service: config, processes, router, HTTP client and metrics, wired once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Coroutine

import aiohttp
from aiohttp import web

from llama_swap import __version__
from llama_swap.config import Config, ModelConfig
from llama_swap.errors import model_not_found, use_error_format
from llama_swap.observe.activity import Activity
from llama_swap.observe.captures import Captures
from llama_swap.observe.events import LOG_DATA, MODEL_STATUS, PROFILE_CHANGED, EventBus
from llama_swap.observe.hardware import HardwareProbe
from llama_swap.observe.logbuffer import LogBuffer, LogHub
from llama_swap.observe.logs import GoStyleFormatter, attach_history, detach_history
from llama_swap.observe.metrics import Metrics
from llama_swap.observe.perf_metrics import SystemCollector
from llama_swap.observe.performance import PerformanceMonitor
from llama_swap.observe.store import ActivityStore
from llama_swap.observe.warm_metrics import WarmCollector
from llama_swap.process import ModelProcess, ProcessState
from llama_swap.reaper import Reaper
from llama_swap.routing.names import Names
from llama_swap.routing.policy import build_policy
from llama_swap.routing.router import RouteError, Router
from llama_swap.server.listing import router_status, status_records
from llama_swap.warm.command import takes_part
from llama_swap.warm.swaps import WarmSwaps
from llama_swap.wire.tunnel import Tunnels
from llama_swap.wire.upstream import UpstreamClient

log = logging.getLogger("llama_swap.service")


def make_session() -> aiohttp.ClientSession:
    """The client for health checks: no idle connections kept — an idle kept-alive
    connection makes llama-server take ~135 ms instead of ~27 ms to exit on SIGTERM
    (measured), which every swap would pay. Requests go through `UpstreamClient`."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


class Service:
    """Everything a request handler needs; built at app start-up, torn down at shutdown."""

    def __init__(self, config: Config, *, use_reaper: bool = True) -> None:
        self.config = config
        use_error_format(config.error_format)
        self.created = int(time.time())
        self.metrics = Metrics(sorted(config.models))
        self.logs = LogHub(config.log_to_stdout)  # GET /logs, /logs/stream/...
        self._log_handler = attach_history(self.logs, config)
        self.events = EventBus()  # GET /api/events
        self._publish_logs("proxy", self.logs.proxy)
        self._publish_logs("upstream", self.logs.upstream)
        self.captures = Captures(config.capture_buffer)  # GET /api/captures/{id}
        self.activity = Activity(
            self.events, self.metrics, _open_store(config), config.ui.activity.session_id, self.captures
        )
        self.session: aiohttp.ClientSession = make_session()  # health checks, slot saves and restores
        self.warm = WarmSwaps(config, self.session)  # KV caches kept across stops (warmSwap)
        self.activity.on_usage = self.warm.observe
        self.upstreams = UpstreamClient()  # every request to a model's server
        self.tunnels = Tunnels()  # open websockets, closed with their model
        self.reaper = Reaper() if use_reaper else None
        self.router = Router(
            {model_id: self._process(model) for model_id, model in sorted(config.models.items())},
            build_policy(config.routing_spec),
            limits=_limits(config),
            priorities=config.routing_spec.priorities,
            on_swap=self.metrics.swap_done,
        )
        self.processes = self.router.processes  # one dict: the router adds and drops entries
        self.names = Names(config)  # requested names -> destinations; the active profile
        self.metrics.queued.set_function(self.router.queue_length)  # read at scrape time only
        self.metrics.watch_memory(self._running_pids)
        self.performance = PerformanceMonitor(config.performance)  # GET /api/performance
        self.metrics.registry.register(SystemCollector(self.performance))
        self.metrics.registry.register(WarmCollector(self.warm, lambda: list(self.config.models)))
        self.hardware = HardwareProbe()  # GET /api/hardware
        self._background: set[asyncio.Task[None]] = set()

    def start_background(self) -> None:
        """Work that starts with the service: the `hooks.on_startup.preload` models, the
        performance sampler and the hardware snapshot."""
        self._spawn(self._preload(self.config.preload))
        self.performance.start()
        self.hardware.start(__version__)

    def apply(self, new: Config) -> None:
        """Switch to a reloaded config as a diff, without downtime.

        Models whose effective settings did not change keep running (live settings such
        as ttl, aliases or names apply at once); changed and removed ones stop when their
        in-flight requests are done; added ones are usable immediately.
        """
        old, self.config = self.config, new
        use_error_format(new.error_format)
        self.warm.configure(new)
        was_active, self.names = self.names.active, Names(new)  # no profile is active after a reload (as in Go)
        if was_active is not None and self.events.active:
            self.events.publish(PROFILE_CHANGED, {"active": None})
        fresh: dict[str, ModelProcess] = {}
        changed: set[str] = set()
        for model_id, model in new.models.items():
            process = self.processes.get(model_id)
            if process is not None and process.config.fingerprint() == model.fingerprint():
                process.config = model
                process.health_check_timeout = new.health_check_timeout
                process.health_check_interval = new.health_check_interval
                continue
            fresh[model_id] = self._process(model)
            if process is not None:
                changed.add(model_id)
            else:
                self.metrics.set_state(model_id, ProcessState.STOPPED)
        removed = sorted(set(old.models) - set(new.models))
        self.logs.log_to_stdout = new.log_to_stdout
        self._log_handler.setFormatter(GoStyleFormatter(new.log_time_format))
        self._reopen_store(new)
        self.activity.session_headers = new.ui.activity.session_id
        self.performance.configure(new.performance)
        self.captures.resize(new.capture_buffer)
        self.router.reconfigure(
            fresh=fresh,
            changed=changed,
            policy=build_policy(new.routing_spec),
            limits=_limits(new),
            priorities=new.routing_spec.priorities,
        )
        added = sorted(set(fresh) - changed)
        log.info(
            "config reloaded: added %s, changed %s, removed %s, %d unchanged",
            added or "none", sorted(changed) or "none", removed or "none",
            len(new.models) - len(fresh),
        )
        self._spawn(self._preload([m for m in new.preload if m not in old.preload or m in fresh]))
        self.publish_status()

    def model_status(self) -> list[dict[str, Any]]:
        models = self.config.models
        warm = (m for m, model in models.items() if takes_part(model.warm_swap, model.argv))
        return status_records(self.config, self.processes, self.warm.cache_sizes(warm))

    def publish_status(self) -> None:
        if self.events.active:
            self.events.publish(MODEL_STATUS, self.model_status())

    def state_of(self, model_id: str) -> ProcessState:
        """A local model's state (stopped when it has no process, e.g. just removed)."""
        process = self.processes.get(model_id)
        return process.state if process is not None else ProcessState.STOPPED

    def router_status(self, model_id: str) -> dict[str, Any]:
        """A local model's `status` in the model listings: its state as llama.cpp's router
        names it and the command it runs (its process's: the port may have moved)."""
        process = self.processes.get(model_id)
        if process is None:
            return router_status(ProcessState.STOPPED, self.config.models[model_id].argv, None)
        return router_status(process.state, process.config.argv, process.last_error)

    def activate_profile(self, name: str | None) -> None:
        """Switch the active profile (None: none); KeyError for an unknown one."""
        if self.names.activate(name):
            log.info("profile %s", f"'{name}' is active" if name is not None else "deactivated: none is active")
            if self.events.active:
                self.events.publish(PROFILE_CHANGED, {"active": name})

    def resolve(self, name: str) -> ModelConfig:
        """The model for an id or alias; raises a 404 `HTTPError` naming it otherwise."""
        model = self.config.model_for(name)
        if model is None:
            raise model_not_found(name)
        return model

    def end_streams(self) -> None:
        """End every open log and event stream and every websocket, so that no reader holds
        up a shutdown (a websocket may idle for as long as its client likes)."""
        self.logs.close()
        self.events.close()
        self.tunnels.close_all()

    async def close(self) -> None:
        """Stop every upstream in parallel, then release the client and the reaper."""
        self.end_streams()
        for task in list(self._background):
            task.cancel()
        self.hardware.close()
        await self.performance.stop()
        await self.router.shutdown()
        await self.session.close()
        self.upstreams.close()
        if self.reaper is not None:
            self.reaper.close()
        detach_history(self._log_handler)
        self.activity.store.close()

    def _publish_logs(self, source: str, buffer: LogBuffer) -> None:
        """Feed a log history's new lines to `/api/events` readers (`logData`)."""

        def publish(data: bytes) -> None:
            if self.events.active:
                self.events.publish(LOG_DATA, {"source": source, "data": data.decode("utf-8", "replace")})

        buffer.forward_to(publish)

    def _reopen_store(self, new: Config) -> None:
        """A reload keeps the activity log unless `store.path` changed."""
        store = self.activity.store
        if _store_path(new) == store.path:
            store.keep = new.metrics_max_in_memory
            return
        store.close()
        self.activity.store = _open_store(new)

    def _running_pids(self) -> list[tuple[str, int]]:
        return [(model, p.pid) for model, p in self.processes.items() if p.pid is not None]

    def _process(self, model: ModelConfig) -> ModelProcess:
        return ModelProcess(
            model,
            health_check_timeout=self.config.health_check_timeout,
            health_check_interval=self.config.health_check_interval,
            session=self.session,
            reaper=self.reaper,
            on_state=self._state_changed,
            on_crash=self._crashed,
            on_output=self.logs.model(model.id).write,
            reserved_ports=self._ports_given_out,
            warm=self.warm,
        )

    def _ports_given_out(self) -> set[int]:
        """Ports the config gave its `${PORT}` models, and those they moved to: a model whose
        port is taken never moves onto another model's."""
        given = {model.port for model in self.config.models.values()}
        given |= {process.config.port for process in self.processes.values()}
        given.discard(None)
        return given  # type: ignore[return-value]

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _preload(self, models: list[str]) -> None:
        """Start models in order, obeying the eviction policy; failures are only logged."""
        for model in models:
            try:
                await self.router.load(model)
            except RouteError as exc:
                log.error("[%s] preload failed: %s", model, exc.message)
                continue
            log.info("[%s] preloaded", model)

    def _state_changed(self, model: str, state: ProcessState) -> None:
        if state is ProcessState.STOPPING:
            self.upstreams.close_idle(self.processes[model].upstream)
        if state is not ProcessState.READY:
            self.tunnels.close(model)  # no websocket outlives its model's server
        self.metrics.set_state(model, state)
        log.debug("[%s] state %s", model, state.value)
        self.publish_status()

    def _crashed(self, model: str) -> None:
        self.router.crashed(model)


SERVICE = web.AppKey("service", Service)


def _store_path(config: Config) -> str | None:
    return config.store.path if config.store is not None else None


def _open_store(config: Config) -> ActivityStore:
    return ActivityStore(_store_path(config), config.metrics_max_in_memory)


def _limits(config: Config) -> dict[str, int]:
    return {m: c.concurrency_limit for m, c in config.models.items()}
