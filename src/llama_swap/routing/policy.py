"""Eviction policies: which running models must stop so that a target can run (pure)."""

from __future__ import annotations

from typing import Protocol


class EvictionPolicy(Protocol):
    """Decides what must make room; never looks at processes, only at names."""

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        """Return the running models that must stop before ``target`` may start."""
        ...


class OneAtATime:
    """llama-swap's default (implicit group, swap and exclusive): one model runs at a time."""

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        return running - {target}
