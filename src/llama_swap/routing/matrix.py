"""The matrix swap engine: a small set DSL and a cost-minimising eviction policy (pure).

Each named set is an expression over models: ``a & b`` (together), ``a | b``
(alternatives), parentheses, and ``+name`` (inline another set); ``&`` binds tighter
than ``|``. An expression denotes a family of model sets with subset semantics: any
subset of an allowed set may run together.

Families are never expanded up front (``(a1|b1) & … & (a30|b30)`` has 2^30 members).
A decision only cares about the target and the running models, so each one evaluates
the expressions projected onto those few models, keeping only maximal projections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_swap.config.routing import MatrixSpec


# ----------------------------------------------------------------------------- syntax
@dataclass(frozen=True, eq=False)
class Leaf:
    """A model (after compilation) or a var/model name as written (after parsing)."""

    name: str
    position: int


@dataclass(frozen=True, eq=False)
class Ref:
    """``+name``: the whole family of another set; only in parsed, uncompiled trees."""

    name: str
    position: int


@dataclass(frozen=True, eq=False)
class AllOf:
    """``a & b & …``: one choice from every part, together."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class AnyOf:
    """``a | b | …``: the choices of any one part."""

    parts: tuple[Expr, ...]


# Nodes compare by identity: compiled sets share the node of every set they reference,
# so memoising on identity evaluates a shared set once per decision.
Expr = Leaf | Ref | AllOf | AnyOf


class DslError(ValueError):
    """A matrix set that cannot be parsed or compiled.

    ``set_name`` is the set the problem is in (None while parsing a lone expression);
    ``position`` is a 0-based offset into that set's expression text, when known.
    """

    def __init__(self, message: str, position: int | None = None, set_name: str | None = None) -> None:
        where = "" if position is None else f" at column {position + 1}"
        super().__init__(message + where)
        self.message = message
        self.position = position
        self.set_name = set_name


_OPERATORS = "&|()"


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdigit() or ch in "_-."


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """Split into (kind, text, position) tokens; kind is an operator, "name", "ref" or "end"."""
    tokens: list[tuple[str, str, int]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _OPERATORS:
            tokens.append((ch, ch, i))
            i += 1
        elif ch == "+" or _is_name_char(ch):
            start = i + 1 if ch == "+" else i
            end = start
            while end < len(text) and _is_name_char(text[end]):
                end += 1
            if end == start:
                raise DslError('expected a set name after "+"', i)
            tokens.append(("ref" if ch == "+" else "name", text[start:end], i))
            i = end
        else:
            raise DslError(f'unexpected character "{ch}"', i)
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent: any := all ('|' all)*; all := atom ('&' atom)*; atom := name | +ref | (any)."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._at = 0

    def parse(self) -> Expr:
        expr = self._any()
        kind, value, position = self._tokens[self._at]
        if kind != "end":
            raise DslError(f'unexpected "{value}" after a complete expression', position)
        return expr

    def _any(self) -> Expr:
        return self._chain("|", self._all, AnyOf)

    def _all(self) -> Expr:
        return self._chain("&", self._atom, AllOf)

    def _chain(self, operator: str, operand: Callable[[], Expr], node: type[AllOf] | type[AnyOf]) -> Expr:
        parts = [operand()]
        while self._tokens[self._at][0] == operator:
            self._at += 1
            parts.append(operand())
        return parts[0] if len(parts) == 1 else node(tuple(parts))

    def _atom(self) -> Expr:
        kind, value, position = self._tokens[self._at]
        self._at += 1
        if kind == "name":
            return Leaf(value, position)
        if kind == "ref":
            return Ref(value, position)
        if kind == "(":
            inner = self._any()
            if self._tokens[self._at][0] != ")":
                raise DslError('missing ")" for the "(" opened', position)
            self._at += 1
            return inner
        found = "end of expression" if kind == "end" else f'"{value}"'
        raise DslError(f"expected a model, +set or ( but found {found}", position)


def parse(text: str) -> Expr:
    """Parse one set expression; DslError names what is wrong and where."""
    if not text.strip():
        raise DslError("must not be empty")
    return _Parser(text).parse()


# -------------------------------------------------------------------------- compiling
def compile_sets(sets: Mapping[str, str], resolve: Callable[[str], str]) -> dict[str, Expr]:
    """Parse every set, resolve names to model IDs and inline ``+refs``, in definition order.

    ``resolve`` maps a name to a model ID or raises LookupError with the reason.
    The result holds only Leaf/AllOf/AnyOf nodes; referenced sets are shared, not copied.
    """
    parsed: dict[str, Expr] = {}
    for name, text in sets.items():
        try:
            parsed[name] = parse(text)
        except DslError as err:
            raise DslError(err.message, err.position, name) from None
    return _Linker(parsed, resolve).link_all()


class _Linker:
    """Resolves one set after the sets it references, detecting cycles on the way."""

    def __init__(self, parsed: dict[str, Expr], resolve: Callable[[str], str]) -> None:
        self._parsed = parsed
        self._resolve = resolve
        self._done: dict[str, Expr] = {}
        self._visiting: list[str] = []

    def link_all(self) -> dict[str, Expr]:
        return {name: self._set(name) for name in self._parsed}

    def _set(self, name: str) -> Expr:
        if name in self._done:
            return self._done[name]
        if name in self._visiting:
            cycle = self._visiting[self._visiting.index(name):] + [name]
            raise DslError("circular reference: " + " -> ".join(f"+{n}" for n in cycle),
                           set_name=cycle[0])
        self._visiting.append(name)
        self._done[name] = self._node(self._parsed[name], name)
        self._visiting.pop()
        return self._done[name]

    def _node(self, expr: Expr, owner: str) -> Expr:
        if isinstance(expr, Leaf):
            try:
                return Leaf(self._resolve(expr.name), expr.position)
            except LookupError as err:
                raise DslError(str(err.args[0]), expr.position, owner) from None
        if isinstance(expr, Ref):
            if expr.name not in self._parsed:
                raise DslError(f'"+{expr.name}" refers to an undefined set', expr.position, owner)
            return self._set(expr.name)
        return type(expr)(tuple(self._node(part, owner) for part in expr.parts))


def _models_in(expr: Expr, memo: dict[Expr, frozenset[str]]) -> frozenset[str]:
    """Every model an expression mentions (a set can only ever hold these)."""
    if expr not in memo:
        if isinstance(expr, Leaf):
            memo[expr] = frozenset({expr.name})
        else:
            assert not isinstance(expr, Ref), "compiled expressions hold no refs"
            memo[expr] = frozenset().union(*(_models_in(part, memo) for part in expr.parts))
    return memo[expr]


# --------------------------------------------------------------------------- solving
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
