"""Prometheus metrics, per model. Each service instance owns its registry."""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from typing import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
        self.queued = Gauge(
            "llamaswap_queued_requests", "Requests waiting for a swap they cannot start yet.", registry=self.registry
        )
        ProcessCollector(registry=self.registry)  # the service's own CPU, memory and file descriptors
        self._alive: set[str] = set()
        self._series: dict[str, ModelSeries] = {}
        self.registry.register(_RequestCollector(self._series))
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
            found = self._series[model] = ModelSeries(model)
        return found

    def watch_memory(self, running: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Export each running model's resident memory, read from /proc at scrape time."""
        self.registry.register(_MemoryCollector(running))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Histogram:
    """A histogram's buckets and sum as plain numbers, turned into a metric at scrape time."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are `le`
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = list(itertools.accumulate(self.counts))
        return [(floatToGoString(b), c) for b, c in zip((*self.bounds, math.inf), cumulative)]


class ModelSeries:
    """One model's per-request metrics, kept as plain numbers: a prometheus_client child
    takes a lock per update (~1-2 µs each, eight per request); these are read only when
    `/metrics` is scraped, on the event loop like every update, so they need none."""

    __slots__ = ("model", "inflight", "requests", "request_seconds", "first_byte_seconds", "tokens",
                 "prompt_rate", "generation_rate")

    def __init__(self, model: str) -> None:
        self.model = model
        self.inflight = 0
        self.requests: dict[tuple[str, int], int] = {}
        self.request_seconds = _Histogram(_REQUEST_BUCKETS)
        self.first_byte_seconds = _Histogram(_REQUEST_BUCKETS)
        self.tokens: dict[str, int] = {}  # by kind, once the upstream reported that kind
        self.prompt_rate: _Histogram | None = None  # created when first reported
        self.generation_rate: _Histogram | None = None

    def answered(self, path: str, status: int) -> None:
        """Count a request by its path label and status."""
        key = (path, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def record_usage(self, usage: Usage) -> None:
        """Count what one request's upstream reported; what it did not report is left out."""
        tokens = self.tokens
        prompt, generated, cached = usage.prompt_tokens, usage.generated_tokens, usage.cached_tokens
        if prompt is not None:
            tokens["prompt"] = tokens.get("prompt", 0) + prompt
        if generated is not None:
            tokens["generated"] = tokens.get("generated", 0) + generated
        if cached is not None:
            tokens["cached"] = tokens.get("cached", 0) + cached
        if usage.prompt_per_second is not None:
            if self.prompt_rate is None:
                self.prompt_rate = _Histogram(_RATE_BUCKETS)
            self.prompt_rate.observe(usage.prompt_per_second)
        if usage.generation_per_second is not None:
            if self.generation_rate is None:
                self.generation_rate = _Histogram(_RATE_BUCKETS)
            self.generation_rate.observe(usage.generation_per_second)


class _RequestCollector(Collector):
    """The per-request families, from every model's `ModelSeries`, at scrape time."""

    def __init__(self, series: dict[str, ModelSeries]) -> None:
        self._series = series

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "llamaswap_requests", "Proxied requests by model, path and status.", labels=("model", "path", "status")
        )
        inflight = GaugeMetricFamily(
            "llamaswap_inflight_requests", "Requests being handled (waiting, loading or streaming), by model.",
            labels=("model",),
        )
        tokens = CounterMetricFamily(
            "llamaswap_tokens", "Tokens the upstreams reported, by model and kind (prompt, generated, cached).",
            labels=("model", "kind"),
        )
        histograms = {
            name: HistogramMetricFamily(name, text, labels=("model",)) for name, text in _HISTOGRAMS.items()
        }
        for model, series in sorted(self._series.items()):
            inflight.add_metric((model,), series.inflight)
            for (path, status), count in series.requests.items():
                requests.add_metric((model, path, str(status)), count)
            for kind, count in series.tokens.items():
                tokens.add_metric((model, kind), count)
            for name, histogram in (
                ("llamaswap_request_duration_seconds", series.request_seconds),
                ("llamaswap_time_to_first_byte_seconds", series.first_byte_seconds),
                ("llamaswap_prompt_tokens_per_second", series.prompt_rate),
                ("llamaswap_generation_tokens_per_second", series.generation_rate),
            ):
                if histogram is not None:
                    histograms[name].add_metric((model,), histogram.buckets(), histogram.sum)
        yield requests
        yield from histograms.values()
        yield inflight
        yield tokens

    def describe(self) -> Iterator[Metric]:
        return iter(())


_HISTOGRAMS = {
    "llamaswap_request_duration_seconds": "Time from request to the end of the response.",
    "llamaswap_time_to_first_byte_seconds": "Time from request to the first byte of the answer's body (for a stream:"
    " its first token event), waiting and loading included.",
    "llamaswap_prompt_tokens_per_second": "Prompt processing speed the upstreams reported, per request.",
    "llamaswap_generation_tokens_per_second": "Generation speed the upstreams reported, per request.",
}


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
