"""Eviction policies: which running models must stop so that a target can run (pure)."""

from __future__ import annotations

from typing import Protocol

from llama_swap.config.routing import RoutingSpec
from llama_swap.routing.groups import GroupPolicy
from llama_swap.routing.matrix import MatrixPolicy


class EvictionPolicy(Protocol):
    """Decides what must make room; never looks at processes, only at names."""

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        """Return the running models that must stop before ``target`` may start."""
        ...


class OneAtATime:
    """llama-swap's default (implicit group, swap and exclusive): one model runs at a time."""

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        return running - {target}


def build_policy(spec: RoutingSpec | None) -> EvictionPolicy:
    """The policy for a validated routing config; no config means one model at a time."""
    if spec is None:
        return OneAtATime()
    if spec.use == "group":
        return GroupPolicy(spec)
    assert spec.matrix is not None, "parse_routing always sets the matrix it selects"
    return MatrixPolicy(spec.matrix)
