"""The matrix swap engine: a cost-minimising eviction policy over compiled sets (pure).

The sets are parsed and compiled at config load (``config.matrix``). Their families
are never expanded up front (``(a1|b1) & … & (a30|b30)`` has 2^30 members). A decision
only cares about the target and the running models, so each one evaluates the
expressions projected onto those few models, keeping only maximal projections.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llama_swap.config.matrix import AnyOf, Expr, Leaf, Ref
from llama_swap.config.routing import MatrixSpec


# --------------------------------------------------------------------------- solving
def _models_in(expr: Expr, memo: dict[Expr, frozenset[str]]) -> frozenset[str]:
    """Every model an expression mentions (a set can only ever hold these)."""
    if expr not in memo:
        if isinstance(expr, Leaf):
            memo[expr] = frozenset({expr.name})
        else:
            assert not isinstance(expr, Ref), "compiled expressions hold no refs"
            memo[expr] = frozenset().union(*(_models_in(part, memo) for part in expr.parts))
    return memo[expr]


class _Projection:
    """Evaluates expressions over a few relevant models, as bit masks.

    A state is the part of one allowed set that falls on the relevant models. Only
    maximal states are kept: a larger allowed set never evicts more (costs are
    positive), so dropping its subsets cannot change the best choice.
    """

    def __init__(self, relevant: Iterable[str]) -> None:
        self.bit = {model: 1 << i for i, model in enumerate(relevant)}
        self._memo: dict[Expr, list[int]] = {}

    def states(self, expr: Expr) -> list[int]:
        if expr not in self._memo:
            self._memo[expr] = self._evaluate(expr)
        return self._memo[expr]

    def _evaluate(self, expr: Expr) -> list[int]:
        if isinstance(expr, Leaf):
            return [self.bit.get(expr.name, 0)]
        assert not isinstance(expr, Ref), "compiled expressions hold no refs"
        if isinstance(expr, AnyOf):
            return _maximal(state for part in expr.parts for state in self.states(part))
        states = [0]
        for part in expr.parts:
            states = _maximal(left | right for left in states for right in self.states(part))
        return states


def _maximal(states: Iterable[int]) -> list[int]:
    """Drop states contained in another, keeping first-seen order for tie-breaks."""
    kept: list[int] = []
    for state in states:
        if any(state | other == other for other in kept):
            continue
        kept = [other for other in kept if other | state != state]
        kept.append(state)
    return kept


@dataclass(frozen=True)
class Decision:
    """Why a target evicts what it does, for the swap log line.

    ``set_name``/``dsl`` are None when nothing had to be chosen: the target already
    runs, or it is in no set and so runs alone.
    """

    target: str
    evict: frozenset[str]
    cost: int
    set_name: str | None = None
    dsl: str | None = None


class MatrixPolicy:
    """Keeps the allowed set (containing the target) whose evictions cost least; ties go to definition order."""

    def __init__(self, spec: MatrixSpec) -> None:
        self._spec = spec
        memo: dict[Expr, frozenset[str]] = {}
        self._support = {name: _models_in(expr, memo) for name, expr in spec.exprs.items()}

    def evict_for(self, target: str, running: frozenset[str]) -> frozenset[str]:
        return self.explain(target, running).evict

    def explain(self, target: str, running: frozenset[str]) -> Decision:
        """The decision `evict_for` takes, with the chosen set and its eviction cost."""
        if target in running:
            return Decision(target, frozenset(), 0)
        others = sorted(running)
        projection = _Projection([target, *others])
        best = Decision(target, frozenset(others), self._cost(others))
        for name, expr in self._spec.exprs.items():
            if target not in self._support[name]:
                continue
            for state in projection.states(expr):
                if not state & projection.bit[target]:
                    continue
                evict = frozenset(m for m in others if not state & projection.bit[m])
                cost = self._cost(evict)
                if best.set_name is None or cost < best.cost:
                    best = Decision(target, evict, cost, name, self._spec.sets[name])
        return best

    def _cost(self, models: Iterable[str]) -> int:
        return sum(self._spec.evict_costs.get(model, 1) for model in models)
