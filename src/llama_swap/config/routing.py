"""The routing part of config.yaml: swap engine (groups or matrix) and scheduler priorities.

Accepts both spellings llama-swap accepts: the current ``routing.router`` block and the
legacy top-level ``groups``/``matrix`` keys (never both). Like the rest of the config,
an unknown key is ignored (and listed in ``RoutingSpec.ignored`` for a warning) unless it
looks like a typo of a known key, wrong types are errors, and every error names the exact
key path so the loader can point at the offending line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_swap.config.fields import go_bool, go_int, near_miss, unknown_key
from llama_swap.config.matrix import DslError, Expr, compile_sets

DEFAULT_GROUP = "(default)"
_VAR_NAME = re.compile(r"[a-zA-Z0-9.-]{1,32}")

Keys = tuple[str | int, ...]
_ROUTER: Keys = ("routing", "router")
_SETTINGS: Keys = (*_ROUTER, "settings")
_SCHEDULER: Keys = ("routing", "scheduler")
_GROUP_KEYS = ("members", "swap", "exclusive", "persistent")
_MATRIX_KEYS = ("vars", "evict_costs", "sets")


class RoutingError(ValueError):
    """A routing problem at a key path; ``keys`` is the same path as a tuple, for line lookup."""

    def __init__(self, keys: Keys, message: str) -> None:
        self.keys = keys
        self.path = _dotted(keys)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class GroupSpec:
    """A swap group. ``swap``: one member at a time; ``exclusive``: evicts other groups;
    ``persistent``: never evicted by other groups."""

    name: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@dataclass(frozen=True)
class MatrixSpec:
    """A validated matrix. ``evict_costs`` is keyed by model ID (vars resolved; absent = 1);
    ``sets`` keeps each set's DSL text and ``exprs`` its compiled form, in definition order."""

    vars: dict[str, str]
    evict_costs: dict[str, int]
    sets: dict[str, str]
    exprs: dict[str, Expr]


@dataclass(frozen=True)
class RoutingSpec:
    """The swap engine in ``use`` plus FIFO priorities by model ID (absent = 0).

    ``groups`` always holds the implicit ``(default)`` group of ungrouped models;
    ``matrix`` is set whenever a matrix block was given, even if ``use`` is "group";
    ``ignored`` lists the unknown keys passed over (not typos of known ones).
    """

    use: Literal["group", "matrix"]
    groups: dict[str, GroupSpec]
    matrix: MatrixSpec | None
    priorities: dict[str, int]
    ignored: tuple[Keys, ...] = ()


@dataclass(frozen=True)
class _Block:
    """A raw config value and where it was found."""

    value: Any
    keys: Keys


@dataclass(frozen=True)
class _Names:
    """Model IDs and aliases, to resolve names and to explain unknown ones; and the
    unknown keys passed over so far (`_known_keys`)."""

    ids: frozenset[str]
    aliases: Mapping[str, str]
    ignored: list[Keys] = field(default_factory=list)

    def model_id(self, name: str) -> str:
        """The model ID itself; aliases are refused with a hint (these lists name models)."""
        if name in self.ids:
            return name
        raise LookupError(self.unknown(name, "model"))

    def unknown(self, name: str, what: str) -> str:
        if name in self.aliases:
            return f'"{name}" is an alias of model "{self.aliases[name]}"; use the model ID'
        close = difflib.get_close_matches(name, sorted(self.ids), n=1)
        return f'unknown {what} "{name}"' + (f' (did you mean "{close[0]}"?)' if close else "")


def parse_routing(
    *, groups: Any, matrix: Any, routing: Any, model_ids: Collection[str], aliases: Mapping[str, str],
) -> RoutingSpec:
    """Validate the raw top-level ``groups``, ``matrix`` and ``routing`` values (None when absent)."""
    names = _Names(frozenset(model_ids), aliases)
    root = _mapping(routing, ("routing",))
    _known_keys(root, ("routing",), ("router", "scheduler"), names.ignored)
    use, group_block, matrix_block = _engine_blocks(root.get("router"), groups, matrix, names.ignored)
    return RoutingSpec(
        use=use,
        groups=_parse_groups(group_block, names),
        matrix=None if matrix_block is None else _parse_matrix(matrix_block, names),
        priorities=_parse_priorities(root.get("scheduler"), names),
        ignored=tuple(names.ignored),
    )


# ------------------------------------------------------------------------ engine choice
_Engine = tuple[Literal["group", "matrix"], _Block, _Block | None]


def _engine_blocks(router: Any, groups: Any, matrix: Any, ignored: list[Keys]) -> _Engine:
    """The engine in use and its (groups, matrix) blocks, from routing.router or the legacy keys."""
    router_map = _mapping(router, _ROUTER)
    _known_keys(router_map, _ROUTER, ("use", "settings"), ignored)
    settings = _mapping(router_map.get("settings"), _SETTINGS)
    _known_keys(settings, _SETTINGS, ("groups", "matrix"), ignored)
    legacy = _legacy_blocks(groups, matrix)
    if legacy is None:
        return _router_blocks(router_map.get("use"), settings)
    # Presence as llama-swap judges it: an empty groups map counts as absent.
    if router_map.get("use") is not None or settings.get("matrix") is not None or settings.get("groups"):
        key = "matrix" if legacy[0] == "matrix" else "groups"
        raise RoutingError((key,), "legacy top-level key cannot be combined with routing.router; "
                                   f"move it to {_dotted((*_SETTINGS, key))}")
    return legacy


def _legacy_blocks(groups: Any, matrix: Any) -> _Engine | None:
    """Top-level ``groups`` or ``matrix`` (not both), or None when neither is given."""
    if matrix is None:
        return ("group", _Block(groups, ("groups",)), None) if groups else None
    if groups:
        raise RoutingError(("matrix",), 'cannot be combined with top-level "groups"; '
                                        "use one swap engine (or routing.router.use to pick one)")
    return "matrix", _Block(None, ("groups",)), _Block(matrix, ("matrix",))


def _router_blocks(use_value: Any, settings: Mapping[str, Any]) -> _Engine:
    """routing.router: both blocks may be given; ``use`` picks the engine."""
    use = _router_use(use_value)
    groups = _Block(settings.get("groups"), (*_SETTINGS, "groups"))
    if settings.get("matrix") is None:
        if use == "matrix":
            raise RoutingError((*_SETTINGS, "matrix"), 'is required when routing.router.use is "matrix"')
        return use, groups, None
    return use, groups, _Block(settings["matrix"], (*_SETTINGS, "matrix"))


def _router_use(value: Any) -> Literal["group", "matrix"]:
    if value is None or value == "group":
        return "group"
    if value == "matrix":
        return "matrix"
    raise RoutingError((*_ROUTER, "use"), 'must be "group" or "matrix"')


# ------------------------------------------------------------------------------ groups
def _parse_groups(block: _Block, names: _Names) -> dict[str, GroupSpec]:
    """Named groups plus the implicit default group holding every model in no group."""
    table = _mapping(block.value, block.keys)
    owner: dict[str, str] = {}
    groups: dict[str, GroupSpec] = {}
    for name, body in table.items():
        keys = (*block.keys, name)
        if name == DEFAULT_GROUP:
            raise RoutingError(keys, "this group name is reserved for models in no group")
        groups[name] = _parse_group(name, body, keys, names, owner)
    ungrouped = tuple(sorted(names.ids - owner.keys()))
    groups[DEFAULT_GROUP] = GroupSpec(DEFAULT_GROUP, ungrouped)
    return groups


def _parse_group(name: str, body: Any, keys: Keys, names: _Names, owner: dict[str, str]) -> GroupSpec:
    body = _mapping(body, keys)
    _known_keys(body, keys, _GROUP_KEYS, names.ignored)
    return GroupSpec(
        name=name,
        members=_members(name, body.get("members"), (*keys, "members"), names, owner),
        swap=_flag(body, keys, "swap", True),
        exclusive=_flag(body, keys, "exclusive", True),
        persistent=_flag(body, keys, "persistent", False),
    )


def _members(group: str, value: Any, keys: Keys, names: _Names, owner: dict[str, str]) -> tuple[str, ...]:
    """Model IDs of one group; claims each in ``owner`` (a model belongs to one group)."""
    if value is None:
        raise RoutingError(keys, "is required")
    if not isinstance(value, list):
        raise RoutingError(keys, "must be a list of model IDs")
    members: list[str] = []
    for index, item in enumerate(value):
        here = (*keys, index)
        model = _resolved(names.model_id, _text(item, here), here)
        if model in members:
            raise RoutingError(here, f'model "{model}" is listed twice')
        if model in owner:
            raise RoutingError(here, f'model "{model}" is already in group "{owner[model]}"; '
                                     "a model can be in only one group")
        owner[model] = group
        members.append(model)
    return tuple(members)


def _flag(body: Mapping[str, Any], keys: Keys, key: str, default: bool) -> bool:
    value = go_bool(body.get(key))
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RoutingError((*keys, key), "must be true or false")
    return value


# ------------------------------------------------------------------------------ matrix
def _parse_matrix(block: _Block, names: _Names) -> MatrixSpec:
    body = _mapping(block.value, block.keys)
    _known_keys(body, block.keys, _MATRIX_KEYS, names.ignored)
    variables = _parse_vars(body.get("vars"), (*block.keys, "vars"), names)

    def resolve(name: str) -> str:
        """A var wins over a same-named model ID, as in llama-swap."""
        if name in variables:
            return variables[name]
        if name in names.ids:
            return name
        raise LookupError(names.unknown(name, "var or model"))

    cost_keys = (*block.keys, "evict_costs")
    costs = _ints_by_model(_mapping(body.get("evict_costs"), cost_keys), cost_keys, resolve, "cost", positive=True)
    sets = _parse_set_texts(body.get("sets"), (*block.keys, "sets"))
    try:
        exprs = compile_sets(sets, resolve)
    except DslError as err:
        raise RoutingError((*block.keys, "sets", err.set_name or ""), str(err)) from None
    return MatrixSpec(vars=variables, evict_costs=costs, sets=sets, exprs=exprs)


def _parse_vars(value: Any, keys: Keys, names: _Names) -> dict[str, str]:
    variables: dict[str, str] = {}
    for name, target in _mapping(value, keys).items():
        here = (*keys, name)
        if not _VAR_NAME.fullmatch(name):
            raise RoutingError(here, 'var names are 1-32 letters, digits, "." or "-"')
        variables[name] = _resolved(names.model_id, _text(target, here), here)
    return variables


def _parse_set_texts(value: Any, keys: Keys) -> dict[str, str]:
    if value is None:
        raise RoutingError(keys, "is required")
    sets = {name: _text(text, (*keys, name)) for name, text in _mapping(value, keys).items()}
    if not sets:
        raise RoutingError(keys, "must define at least one set")
    return sets


# --------------------------------------------------------------------------- scheduler
def _parse_priorities(value: Any, names: _Names) -> dict[str, int]:
    """routing.scheduler: only fifo exists; its priorities accept model IDs or aliases."""
    scheduler = _mapping(value, _SCHEDULER)
    _known_keys(scheduler, _SCHEDULER, ("use", "settings"), names.ignored)
    if scheduler.get("use") not in (None, "fifo"):
        raise RoutingError((*_SCHEDULER, "use"), 'must be "fifo"')
    keys = (*_SCHEDULER, "settings")
    settings = _mapping(scheduler.get("settings"), keys)
    _known_keys(settings, keys, ("fifo",), names.ignored)
    keys = (*keys, "fifo")
    fifo = _mapping(settings.get("fifo"), keys)
    _known_keys(fifo, keys, ("priority",), names.ignored)
    keys = (*keys, "priority")

    def resolve(name: str) -> str:
        model = names.aliases.get(name, name)
        if model in names.ids:
            return model
        raise LookupError(names.unknown(name, "model"))

    return _ints_by_model(_mapping(fifo.get("priority"), keys), keys, resolve, "priority", positive=False)


def _ints_by_model(
    table: Mapping[str, Any], keys: Keys, resolve: Callable[[str], str], what: str, *, positive: bool,
) -> dict[str, int]:
    """Integers keyed by model ID, given under any name ``resolve`` accepts; one per model."""
    values: dict[str, int] = {}
    given_as: dict[str, str] = {}
    for name, raw in table.items():
        here = (*keys, name)
        model = _resolved(resolve, name, here)
        value = go_int(raw)
        if isinstance(value, bool) or not isinstance(value, int) or (positive and value < 1):
            raise RoutingError(here, "must be a positive integer" if positive else "must be an integer")
        if model in values:
            raise RoutingError(here, f'sets the {what} of model "{model}" again (already set as "{given_as[model]}")')
        values[model] = value
        given_as[model] = name
    return values


# ----------------------------------------------------------------------------- helpers
def _mapping(value: Any, keys: Keys) -> dict[str, Any]:
    """A mapping, with an absent (None) one read as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RoutingError(keys, "must be a mapping")
    return value


def _known_keys(body: Mapping[str, Any], keys: Keys, known: tuple[str, ...], ignored: list[Keys]) -> None:
    """An unknown key is an error if it looks like a typo of a known one, else it is
    added to ``ignored`` (llama-swap ignores keys it does not know)."""
    for key in body:
        if key not in known:
            if near_miss(str(key), known) is not None:
                raise RoutingError((*keys, key), unknown_key(str(key), known))
            ignored.append((*keys, key))


def _text(value: Any, keys: Keys) -> str:
    """A name or expression; a bare YAML number (a model called 7) counts as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RoutingError(keys, "must be a string")


def _resolved(resolve: Callable[[str], str], name: str, keys: Keys) -> str:
    """``resolve(name)``, its LookupError reported at ``keys``."""
    try:
        return resolve(name)
    except LookupError as err:
        raise RoutingError(keys, str(err.args[0])) from None


def _dotted(keys: Keys) -> str:
    """``a.b[0].c``: the same spelling the config loader uses."""
    text = ""
    for part in keys:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
