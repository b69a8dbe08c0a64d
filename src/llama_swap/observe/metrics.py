"""Prometheus metrics, per model. Each service instance owns its registry."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from llama_swap.observe.usage import Usage
from llama_swap.process import ProcessState, group_rss

disable_created_metrics()  # `_created` series double the output and nobody graphs them

_SWAP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)


class Metrics:
    """The service's counters; updates cost about a microsecond, so they stay on the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, models: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llamaswap_requests", "Proxied requests by model, path and status.",
            ("model", "path", "status"), registry=self.registry,
        )
        self.request_seconds = Histogram(
            "llamaswap_request_duration_seconds", "Time from request to the end of the response.",
            ("model",), buckets=_REQUEST_BUCKETS, registry=self.registry,
        )
        self.first_byte_seconds = Histogram(
            "llamaswap_time_to_first_byte_seconds",
            "Time from request to the first byte of the answer's body (for a stream: its first token event),"
            " waiting and loading included.",
            ("model",), buckets=_REQUEST_BUCKETS, registry=self.registry,
        )
        self.swaps = Counter(
            "llamaswap_swaps", "Model starts (swaps) by model and outcome.", ("model", "outcome"), registry=self.registry
        )
        self.start_failures = Counter(
            "llamaswap_start_failures", "Starts that failed (exited, never healthy, port taken...), by model.",
            ("model",), registry=self.registry,
        )
        self.swap_seconds = Histogram(
            "llamaswap_swap_duration_seconds", "Time to stop what must make room and start a model until healthy.",
            ("model",), buckets=_SWAP_BUCKETS, registry=self.registry,
        )
        self.state = Gauge(
            "llamaswap_model_state", "1 for the state each model is in.", ("model", "state"), registry=self.registry
        )
        self.running = Gauge("llamaswap_running_models", "Models whose upstream is alive.", registry=self.registry)
        self.inflight = Gauge(
            "llamaswap_inflight_requests", "Requests being handled (waiting, loading or streaming), by model.",
            ("model",), registry=self.registry,
        )
        self.queued = Gauge(
            "llamaswap_queued_requests", "Requests waiting for a swap they cannot start yet.", registry=self.registry
        )
        self.tokens = Counter(
            "llamaswap_tokens", "Tokens the upstreams reported, by model and kind (prompt, generated, cached).",
            ("model", "kind"), registry=self.registry,
        )
        self.prompt_rate = Histogram(
            "llamaswap_prompt_tokens_per_second", "Prompt processing speed the upstreams reported, per request.",
            ("model",), buckets=_RATE_BUCKETS, registry=self.registry,
        )
        self.generation_rate = Histogram(
            "llamaswap_generation_tokens_per_second", "Generation speed the upstreams reported, per request.",
            ("model",), buckets=_RATE_BUCKETS, registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # the service's own CPU, memory and file descriptors
        self._alive: set[str] = set()
        self._series: dict[str, ModelSeries] = {}
        for model in models:
            self.set_state(model, ProcessState.STOPPED)

    def set_state(self, model: str, state: ProcessState) -> None:
        for s in ProcessState:
            self.state.labels(model, s.value).set(1 if s is state else 0)
        if state is ProcessState.STOPPED or state is ProcessState.FAILED:
            self._alive.discard(model)
        else:
            self._alive.add(model)
        self.running.set(len(self._alive))

    def swap_done(self, model: str, seconds: float, outcome: str) -> None:
        """A start ended: "ok", "failed" or "aborted" (unloaded or shut down before ready)."""
        self.swaps.labels(model, outcome).inc()
        if outcome == "ok":
            self.swap_seconds.labels(model).observe(seconds)
        elif outcome == "failed":
            self.start_failures.labels(model).inc()

    def series(self, model: str) -> ModelSeries:
        """``model``'s per-request series, resolved once and reused on every request."""
        found = self._series.get(model)
        if found is None:
            found = self._series[model] = ModelSeries(self, model)
        return found

    def watch_memory(self, running: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Export each running model's resident memory, read from /proc at scrape time."""
        self.registry.register(_MemoryCollector(running))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelSeries:
    """One model's children of the per-request metrics: `labels()` takes a lock and builds
    a key each time, which the hot path does not need to pay for every request."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.model = model
        self.inflight = metrics.inflight.labels(model)
        self.request_seconds = metrics.request_seconds.labels(model)
        self.first_byte_seconds = metrics.first_byte_seconds.labels(model)
        self._metrics = metrics
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def answered(self, path: str, status: int) -> None:
        """Count a request by its path label and status."""
        self._child(self._metrics.requests, path, str(status)).inc()

    def record_usage(self, usage: Usage) -> None:
        """Count what one request's upstream reported; what it did not report is left out."""
        metrics = self._metrics
        for kind, count in (
            ("prompt", usage.prompt_tokens), ("generated", usage.generated_tokens), ("cached", usage.cached_tokens)
        ):
            if count is not None:
                self._child(metrics.tokens, kind).inc(count)
        if usage.prompt_per_second is not None:
            self._child(metrics.prompt_rate).observe(usage.prompt_per_second)
        if usage.generation_per_second is not None:
            self._child(metrics.generation_rate).observe(usage.generation_per_second)

    def _child(self, family: Counter | Histogram, *labels: str) -> Any:
        """The model's child of ``family`` for ``labels``, created when first needed (so a
        series appears only once it has something to say) and then reused."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(self.model, *labels)
        return child


class _MemoryCollector(Collector):
    def __init__(self, running: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._running = running

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "llamaswap_model_resident_memory_bytes",
            "Resident memory of each running model's process group (its server and any wrapper).",
            labels=("model",),
        )
        for model, pid in self._running():
            rss = group_rss(pid)
            if rss is not None:
                family.add_metric((model,), rss)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
