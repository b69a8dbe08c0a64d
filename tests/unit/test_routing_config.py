"""Validation of the routing config: both spellings, groups, matrix, FIFO priorities, exact key paths."""

from __future__ import annotations

from typing import Any

import pytest

from llama_swap.config.routing import (
    DEFAULT_GROUP,
    GroupSpec,
    RoutingError,
    RoutingSpec,
    parse_routing,
)

MODELS = ("llama3", "qwen", "coder", "embed", "7")
ALIASES = {"l3": "llama3", "q": "qwen"}
SETTINGS = "routing.router.settings"


def parse(groups: Any = None, matrix: Any = None, routing: Any = None) -> RoutingSpec:
    return parse_routing(groups=groups, matrix=matrix, routing=routing, model_ids=MODELS, aliases=ALIASES)


def error(groups: Any = None, matrix: Any = None, routing: Any = None) -> str:
    with pytest.raises(RoutingError) as caught:
        parse(groups, matrix, routing)
    return str(caught.value)


def router(settings: dict[str, Any], use: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"settings": settings}
    if use is not None:
        block["use"] = use
    return {"router": block}


def default_group(*members: str) -> GroupSpec:
    return GroupSpec(DEFAULT_GROUP, members)


# ----------------------------------------------------------------------------- accepted
def test_nothing_configured_puts_every_model_in_the_default_group() -> None:
    assert parse() == RoutingSpec(
        use="group",
        groups={DEFAULT_GROUP: default_group("7", "coder", "embed", "llama3", "qwen")},
        matrix=None,
        priorities={},
    )


@pytest.mark.parametrize(
    ("groups", "routing"),
    [
        pytest.param({"g": {"members": ["llama3", "qwen"]}}, None, id="legacy"),
        pytest.param(None, router({"groups": {"g": {"members": ["llama3", "qwen"]}}}), id="routing"),
        pytest.param(None, router({"groups": {"g": {"members": ["llama3", "qwen"]}}}, use="group"), id="explicit-use"),
        pytest.param({}, router({"groups": {"g": {"members": ["llama3", "qwen"]}}}), id="empty-legacy-ignored"),
    ],
)
def test_groups_in_either_spelling(groups: Any, routing: Any) -> None:
    spec = parse(groups=groups, routing=routing)
    assert spec.use == "group"
    assert spec.groups == {
        "g": GroupSpec("g", ("llama3", "qwen")),
        DEFAULT_GROUP: default_group("7", "coder", "embed"),
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"members": []}, GroupSpec("g", (), swap=True, exclusive=True, persistent=False)),
        ({"members": ["qwen"], "swap": False}, GroupSpec("g", ("qwen",), swap=False)),
        ({"members": ["qwen"], "exclusive": False}, GroupSpec("g", ("qwen",), exclusive=False)),
        ({"members": ["qwen"], "persistent": True}, GroupSpec("g", ("qwen",), persistent=True)),
        ({"members": ["qwen"], "swap": None, "exclusive": None, "persistent": None}, GroupSpec("g", ("qwen",))),
        ({"members": [7]}, GroupSpec("g", ("7",))),
    ],
)
def test_group_flags_and_defaults(body: dict[str, Any], expected: GroupSpec) -> None:
    assert parse(groups={"g": body}).groups["g"] == expected


@pytest.mark.parametrize(
    ("matrix", "routing"),
    [
        pytest.param({"sets": {"s": "llama3 & qwen"}}, None, id="legacy"),
        pytest.param(None, router({"matrix": {"sets": {"s": "llama3 & qwen"}}}, use="matrix"), id="routing"),
        pytest.param({"sets": {"s": "llama3 & qwen"}}, {"scheduler": {"use": "fifo"}}, id="legacy+scheduler"),
    ],
)
def test_matrix_in_either_spelling(matrix: Any, routing: Any) -> None:
    spec = parse(matrix=matrix, routing=routing)
    assert spec.use == "matrix"
    assert spec.matrix is not None and spec.matrix.sets == {"s": "llama3 & qwen"}
    assert spec.groups == {DEFAULT_GROUP: default_group("7", "coder", "embed", "llama3", "qwen")}


def test_empty_legacy_groups_do_not_conflict_with_legacy_matrix() -> None:
    assert parse(groups={}, matrix={"sets": {"s": "qwen"}}).use == "matrix"


@pytest.mark.parametrize(("use", "expected"), [(None, "group"), ("group", "group"), ("matrix", "matrix")])
def test_router_use_selects_between_both_blocks(use: str | None, expected: str) -> None:
    settings = {"groups": {"g": {"members": ["qwen"]}}, "matrix": {"sets": {"s": "qwen & coder"}}}
    spec = parse(routing=router(settings, use=use))
    assert spec.use == expected
    assert spec.matrix is not None and "s" in spec.matrix.exprs
    assert spec.groups["g"].members == ("qwen",)


def test_matrix_vars_costs_and_set_order() -> None:
    spec = parse(matrix={
        "vars": {"L": "llama3", "qwen": "coder", "m.1-x": "embed"},
        "evict_costs": {"L": 3, "qwen": 2, "embed": 7},
        "sets": {"z": "L & qwen", "a": "+z | m.1-x", "m": "7"},
    })
    assert spec.matrix is not None
    assert spec.matrix.vars == {"L": "llama3", "qwen": "coder", "m.1-x": "embed"}
    assert spec.matrix.evict_costs == {"llama3": 3, "coder": 2, "embed": 7}  # a var wins over a model ID
    assert list(spec.matrix.sets) == ["z", "a", "m"]
    assert list(spec.matrix.exprs) == ["z", "a", "m"]


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ({}, {}),
        ({"llama3": 10, "qwen": -2}, {"llama3": 10, "qwen": -2}),
        ({"l3": 5}, {"llama3": 5}),
        ({"7": 1}, {"7": 1}),
    ],
)
def test_fifo_priorities_resolve_aliases(priority: dict[str, Any], expected: dict[str, int]) -> None:
    routing = {"scheduler": {"use": "fifo", "settings": {"fifo": {"priority": priority}}}}
    assert parse(routing=routing).priorities == expected


def test_scheduler_block_may_accompany_legacy_groups() -> None:
    routing = {"scheduler": {"settings": {"fifo": {"priority": {"qwen": 1}}}}}
    spec = parse(groups={"g": {"members": ["qwen"]}}, routing=routing)
    assert spec.priorities == {"qwen": 1} and "g" in spec.groups


def test_error_carries_path_tuple_and_message() -> None:
    with pytest.raises(RoutingError) as caught:
        parse(groups={"g": {"members": ["llama3", "nope"]}})
    err = caught.value
    assert err.keys == ("groups", "g", "members", 1)
    assert err.path == "groups.g.members[1]"
    assert err.message == 'unknown model "nope"'
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("groups", "matrix", "routing", "expected"),
    [
        # shapes and unknown keys
        (None, None, ["x"], "routing: must be a mapping"),
        (None, None, {"routers": {}}, 'routing.routers: unknown key (did you mean "router"?)'),
        (None, None, {"router": {"usee": "group"}}, 'routing.router.usee: unknown key (did you mean "use"?)'),
        (None, None, router({"group": {}}), f'{SETTINGS}.group: unknown key (did you mean "groups"?)'),
        (None, None, router([]), f"{SETTINGS}: must be a mapping"),
        (None, None, {"router": {"use": "lru"}}, 'routing.router.use: must be "group" or "matrix"'),
        (None, None, {"router": {"use": "matrix"}},
         f'{SETTINGS}.matrix: is required when routing.router.use is "matrix"'),
        # legacy vs routing.router
        ({"g": {"members": ["qwen"]}}, None, router({"groups": {"h": {"members": ["coder"]}}}),
         f"groups: legacy top-level key cannot be combined with routing.router; move it to {SETTINGS}.groups"),
        ({"g": {"members": ["qwen"]}}, None, {"router": {"use": "group"}},
         f"groups: legacy top-level key cannot be combined with routing.router; move it to {SETTINGS}.groups"),
        (None, {"sets": {"s": "qwen"}}, router({"matrix": {"sets": {"s": "qwen"}}}, use="matrix"),
         f"matrix: legacy top-level key cannot be combined with routing.router; move it to {SETTINGS}.matrix"),
        ({"g": {"members": ["qwen"]}}, {"sets": {"s": "qwen"}}, None,
         'matrix: cannot be combined with top-level "groups"; use one swap engine (or routing.router.use to pick one)'),
        # groups
        (["g"], None, None, "groups: must be a mapping"),
        ({"g": None}, None, None, "groups.g.members: is required"),
        ({"g": ["qwen"]}, None, None, "groups.g: must be a mapping"),
        ({"g": {"swap": True}}, None, None, "groups.g.members: is required"),
        (None, None, router({"groups": {"g": {}}}), f"{SETTINGS}.groups.g.members: is required"),
        ({"g": {"members": "qwen"}}, None, None, "groups.g.members: must be a list of model IDs"),
        ({"g": {"members": [["qwen"]]}}, None, None, "groups.g.members[0]: must be a string"),
        ({"g": {"members": ["qwen", "lama3"]}}, None, None,
         'groups.g.members[1]: unknown model "lama3" (did you mean "llama3"?)'),
        ({"g": {"members": ["l3"]}}, None, None,
         'groups.g.members[0]: "l3" is an alias of model "llama3"; use the model ID'),
        ({"g": {"members": ["qwen", "coder", "qwen"]}}, None, None, 'groups.g.members[2]: model "qwen" is listed twice'),
        ({"g": {"members": ["qwen"]}, "h": {"members": ["coder", "qwen"]}}, None, None,
         'groups.h.members[1]: model "qwen" is already in group "g"; a model can be in only one group'),
        ({"g": {"members": ["qwen"], "exclusve": False}}, None, None,
         'groups.g.exclusve: unknown key (did you mean "exclusive"?)'),
        ({"g": {"members": ["qwen"], "swap": "maybe"}}, None, None, "groups.g.swap: must be true or false"),
        ({"g": {"members": ["qwen"], "persistent": 1}}, None, None, "groups.g.persistent: must be true or false"),
        ({DEFAULT_GROUP: {"members": ["qwen"]}}, None, None,
         "groups.(default): this group name is reserved for models in no group"),
        # matrix block
        (None, "sets", None, "matrix: must be a mapping"),
        (None, {}, None, "matrix.sets: is required"),
        (None, {"sets": {}}, None, "matrix.sets: must define at least one set"),
        (None, {"sets": ["a"]}, None, "matrix.sets: must be a mapping"),
        (None, {"sets": {"s": "qwen"}, "var": {}}, None, 'matrix.var: unknown key (did you mean "vars"?)'),
        (None, {"sets": {"s": ["qwen"]}}, None, "matrix.sets.s: must be a string"),
        # vars
        (None, {"vars": {"a_b": "qwen"}, "sets": {"s": "qwen"}}, None,
         'matrix.vars.a_b: var names are 1-32 letters, digits, "." or "-"'),
        (None, {"vars": {"x" * 33: "qwen"}, "sets": {"s": "qwen"}}, None,
         f'matrix.vars.{"x" * 33}: var names are 1-32 letters, digits, "." or "-"'),
        (None, {"vars": {"q1": "nope"}, "sets": {"s": "qwen"}}, None, 'matrix.vars.q1: unknown model "nope"'),
        (None, {"vars": {"q1": "q"}, "sets": {"s": "qwen"}}, None,
         'matrix.vars.q1: "q" is an alias of model "qwen"; use the model ID'),
        # evict_costs
        (None, {"evict_costs": {"qwen": 0}, "sets": {"s": "qwen"}}, None,
         "matrix.evict_costs.qwen: must be a positive integer"),
        (None, {"evict_costs": {"qwen": -3}, "sets": {"s": "qwen"}}, None,
         "matrix.evict_costs.qwen: must be a positive integer"),
        (None, {"evict_costs": {"qwen": True}, "sets": {"s": "qwen"}}, None,
         "matrix.evict_costs.qwen: must be a positive integer"),
        (None, {"evict_costs": {"qwen": "2"}, "sets": {"s": "qwen"}}, None,
         "matrix.evict_costs.qwen: must be a positive integer"),
        (None, {"evict_costs": {"zz": 2}, "sets": {"s": "qwen"}}, None,
         'matrix.evict_costs.zz: unknown var or model "zz"'),
        (None, {"vars": {"Q": "qwen"}, "evict_costs": {"Q": 2, "qwen": 3}, "sets": {"s": "qwen"}}, None,
         'matrix.evict_costs.qwen: sets the cost of model "qwen" again (already set as "Q")'),
        # DSL
        (None, {"sets": {"ok": "qwen", "s": "qwen & c/d"}}, None, 'matrix.sets.s: unexpected character "/" at column 9'),
        (None, {"sets": {"s": "qwen &"}}, None,
         "matrix.sets.s: expected a model, +set or ( but found end of expression at column 7"),
        (None, {"sets": {"s": "  "}}, None, "matrix.sets.s: must not be empty"),
        (None, {"sets": {"s": "qwen & lama3"}}, None,
         'matrix.sets.s: unknown var or model "lama3" (did you mean "llama3"?) at column 8'),
        (None, {"sets": {"s": "l3 | qwen"}}, None,
         'matrix.sets.s: "l3" is an alias of model "llama3"; use the model ID at column 1'),
        (None, {"sets": {"s": "qwen | +other"}}, None, 'matrix.sets.s: "+other" refers to an undefined set at column 8'),
        (None, {"sets": {"a": "qwen & +b", "b": "coder | +a"}}, None, "matrix.sets.a: circular reference: +a -> +b -> +a"),
        (None, {"sets": {"a": "qwen", "b": "+b"}}, None, "matrix.sets.b: circular reference: +b -> +b"),
        (None, None, router({"matrix": {"sets": {"s": "qwen |"}}}, use="matrix"),
         f"{SETTINGS}.matrix.sets.s: expected a model, +set or ( but found end of expression at column 7"),
        # scheduler
        (None, None, {"scheduler": {"use": "priority"}}, 'routing.scheduler.use: must be "fifo"'),
        (None, None, {"scheduler": {"settings": {"lifo": {}}}},
         'routing.scheduler.settings.lifo: unknown key (did you mean "fifo"?)'),
        (None, None, {"scheduler": {"settings": {"fifo": {"priorities": {}}}}},
         'routing.scheduler.settings.fifo.priorities: unknown key (did you mean "priority"?)'),
        (None, None, {"scheduler": {"settings": {"fifo": {"priority": {"nope": 1}}}}},
         'routing.scheduler.settings.fifo.priority.nope: unknown model "nope"'),
        (None, None, {"scheduler": {"settings": {"fifo": {"priority": {"qwen": "high"}}}}},
         "routing.scheduler.settings.fifo.priority.qwen: must be an integer"),
        (None, None, {"scheduler": {"settings": {"fifo": {"priority": {"qwen": True}}}}},
         "routing.scheduler.settings.fifo.priority.qwen: must be an integer"),
        (None, None, {"scheduler": {"settings": {"fifo": {"priority": {"llama3": 1, "l3": 2}}}}},
         'routing.scheduler.settings.fifo.priority.l3: sets the priority of model "llama3" again (already set as "llama3")'),
    ],
)
def test_errors_name_the_exact_key_path(groups: Any, matrix: Any, routing: Any, expected: str) -> None:
    assert error(groups, matrix, routing) == expected


def test_inactive_matrix_block_is_still_validated() -> None:
    settings = {"groups": {"g": {"members": ["qwen"]}}, "matrix": {"sets": {"s": "nope"}}}
    assert error(routing=router(settings, use="group")) == (
        f'{SETTINGS}.matrix.sets.s: unknown var or model "nope" at column 1')


def test_inactive_groups_block_is_still_validated() -> None:
    settings = {"groups": {"g": {"members": ["nope"]}}, "matrix": {"sets": {"s": "qwen"}}}
    assert error(routing=router(settings, use="matrix")) == f'{SETTINGS}.groups.g.members[0]: unknown model "nope"'
