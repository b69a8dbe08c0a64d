"""Warm swaps as Prometheus series, per model, read from `WarmSwaps` at scrape time only.

Bytes saved and restored, save and restore times (summaries: count and total seconds),
restore hits and misses (whether the first request after a restore reported cached tokens),
prompt tokens not computed again thanks to a restore, and the saved caches' size on disk.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from llama_swap.warm.swaps import WarmStats, WarmSwaps

_COUNTERS: tuple[tuple[str, str, Callable[[WarmStats], float]], ...] = (
    ("llamaswap_warm_swap_saved_bytes", "Bytes of KV cache saved before a model stopped.", lambda s: s.saved_bytes),
    ("llamaswap_warm_swap_restored_bytes", "Bytes of KV cache restored after a model started.",
     lambda s: s.restored_bytes),
    ("llamaswap_warm_swap_restore_hits", "Restores whose next request reported cached tokens.", lambda s: s.hits),
    ("llamaswap_warm_swap_restore_misses", "Restores whose next request reported no cached tokens (cache_n 0).",
     lambda s: s.misses),
    ("llamaswap_warm_swap_prefill_tokens_avoided", "Prompt tokens served from a restored KV cache.",
     lambda s: s.tokens_avoided),
)


class WarmCollector(Collector):
    def __init__(self, warm: WarmSwaps, models: Callable[[], list[str]]) -> None:
        self._warm = warm
        self._models = models  # the configured models, for the on-disk gauge

    def collect(self) -> Iterator[Metric]:
        stats = sorted(self._warm.stats.items())
        for name, documentation, read in _COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=("model",))
            for model, stat in stats:
                family.add_metric((model,), read(stat))
            yield family
        saves = SummaryMetricFamily("llamaswap_warm_swap_save_seconds", "Time a stop spent saving KV caches (stops that saved some).",
                                    labels=("model",))
        restores = SummaryMetricFamily("llamaswap_warm_swap_restore_seconds", "Time a start spent restoring KV caches (starts that restored some).",
                                       labels=("model",))
        for model, stat in stats:
            saves.add_metric((model,), stat.saves, stat.save_seconds)
            restores.add_metric((model,), stat.restores, stat.restore_seconds)
        yield saves
        yield restores
        on_disk = GaugeMetricFamily("llamaswap_warm_swap_cache_bytes", "Bytes of saved KV caches on disk, by model.",
                                    labels=("model",))
        for model, size in sorted(self._warm.cache_sizes(self._models()).items()):
            on_disk.add_metric((model,), size)
        yield on_disk
