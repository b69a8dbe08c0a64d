"""The group swap engine: evictions follow static group rules (pure)."""

from __future__ import annotations

from llama_swap.config.routing import DEFAULT_GROUP, GroupSpec, RoutingSpec


class GroupPolicy:
    """llama-swap's groups.

    Loading a model stops its running siblings when its group swaps, and, when its
    group is exclusive, the running members of every non-persistent other group.
    A non-exclusive group leaves others alone, so loading one of its members does not
    stop a running exclusive group: both then coexist (a gotcha kept for compatibility).
    """

    def __init__(self, spec: RoutingSpec) -> None:
        self._group_of = {model: group for group in spec.groups.values() for model in group.members}
        # Models in no group are in the implicit default group: one at a time, exclusive.
        self._default = spec.groups.get(DEFAULT_GROUP, GroupSpec(DEFAULT_GROUP, ()))

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        loading = self._group(target)
        return frozenset(m for m in running if m != target and _stops(loading, self._group(m)))

    def _group(self, model: str) -> GroupSpec:
        return self._group_of.get(model, self._default)


def _stops(loading: GroupSpec, other: GroupSpec) -> bool:
    """Whether loading a member of ``loading`` stops a running member of ``other``."""
    if other.name == loading.name:
        return loading.swap
    return loading.exclusive and not other.persistent
