"""The matrix set DSL, parsed and validated at config load time (pure).

Each named set is an expression over models: ``a & b`` (together), ``a | b``
(alternatives), parentheses, and ``+name`` (inline another set); ``&`` binds tighter
than ``|``. An expression denotes a family of model sets with subset semantics: any
subset of an allowed set may run together.

This lives in ``config`` so that a bad set fails the load with its key path; the
compiled trees are what ``routing.matrix`` evaluates per decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


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
