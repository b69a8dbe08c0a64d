"""The group engine, its equivalence with one-at-a-time, and picking a policy from the config."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from llama_swap.config.routing import RoutingSpec, parse_routing
from llama_swap.routing.groups import GroupPolicy
from llama_swap.routing.matrix import MatrixPolicy
from llama_swap.routing.policy import OneAtATime, build_policy
from llama_swap.routing.scheduler import Grant, Scheduler, StartSwap

MODELS = ("a", "b", "c", "d", "e")


def routing(groups: dict[str, Any] | None = None, matrix: dict[str, Any] | None = None) -> RoutingSpec:
    return parse_routing(groups=groups, matrix=matrix, routing=None, model_ids=MODELS, aliases={})


def group(*members: str, **flags: bool) -> dict[str, Any]:
    return {"members": list(members), **flags}


def run(*models: str) -> frozenset[str]:
    return frozenset(models)


SWAP_PAIR = {"g": group("a", "b")}
TOGETHER = {"g": group("a", "b", swap=False)}
TWO_EXCLUSIVE = {"g1": group("a", "b"), "g2": group("c", "d")}
TWO_SHARED = {"g1": group("a", "b", swap=False, exclusive=False), "g2": group("c", "d", swap=False, exclusive=False)}
PERSISTENT = {"keep": group("a", "b", persistent=True), "other": group("c")}
GOTCHA = {"solo": group("a"), "side": group("c", exclusive=False)}
ONE_AT_A_TIME_EXCLUSIVE = {"g": group("a", "b", swap=False)}


@pytest.mark.parametrize(
    ("groups", "target", "running", "evict"),
    [
        # swap: one member at a time
        (SWAP_PAIR, "b", run("a"), run("a")),
        # swap: false: members coexist
        (TOGETHER, "b", run("a"), run()),
        # exclusive groups evict each other
        (TWO_EXCLUSIVE, "c", run("a"), run("a")),
        (TWO_EXCLUSIVE, "c", run("a", "d"), run("a", "d")),
        # non-exclusive groups leave each other alone
        (TWO_SHARED, "c", run("a", "b"), run()),
        # persistent: other groups never evict it; swap inside it still applies
        (PERSISTENT, "c", run("a"), run()),
        (PERSISTENT, "b", run("a", "c"), run("a", "c")),
        (PERSISTENT, "b", run("a"), run("a")),
        # the compatibility gotcha: a non-exclusive member does not unload a running exclusive group...
        (GOTCHA, "c", run("a"), run()),
        # ...while loading the exclusive member does evict the non-exclusive one
        (GOTCHA, "a", run("c"), run("c")),
        # the implicit default group (swap, exclusive) holds the ungrouped models
        (SWAP_PAIR, "d", run("c"), run("c")),
        (SWAP_PAIR, "d", run("a"), run("a")),
        (SWAP_PAIR, "a", run("c", "d"), run("c", "d")),
        (TWO_SHARED, "e", run("a", "c"), run("a", "c")),
        (TWO_SHARED, "a", run("e"), run()),  # non-exclusive: leaves the default group alone
        (PERSISTENT, "e", run("a", "c"), run("c")),
        # swap: false but exclusive: siblings stay, other groups go
        (ONE_AT_A_TIME_EXCLUSIVE, "b", run("a", "c"), run("c")),
        # nothing running, or only the target
        (TWO_EXCLUSIVE, "a", run(), run()),
        (TWO_EXCLUSIVE, "a", run("a"), run()),
    ],
)
def test_group_rules(groups: dict[str, Any], target: str, running: frozenset[str], evict: frozenset[str]) -> None:
    assert GroupPolicy(routing(groups)).evict_for(target, running) == evict


def all_subsets(items: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(c) for size in range(len(items) + 1) for c in itertools.combinations(items, size)]


def test_default_group_alone_is_exactly_one_at_a_time() -> None:
    grouped, single = GroupPolicy(routing()), OneAtATime()
    for target, running in itertools.product(MODELS, all_subsets(MODELS)):
        assert grouped.evict_for(target, running) == single.evict_for(target, running), (target, running)


def test_models_outside_the_config_behave_as_default_group_members() -> None:
    grouped = GroupPolicy(routing({"g": group("a", swap=False, exclusive=False)}))
    assert grouped.evict_for("zz", run("a", "b")) == run("a", "b")
    assert grouped.evict_for("a", run("zz")) == run()


# ------------------------------------------------------------------------ build_policy
def test_no_config_is_one_at_a_time() -> None:
    assert isinstance(build_policy(None), OneAtATime)


def test_groups_config_builds_the_group_engine() -> None:
    policy = build_policy(routing(TOGETHER))
    assert isinstance(policy, GroupPolicy)
    assert policy.evict_for("b", run("a", "c")) == run("c")


def test_matrix_config_builds_the_matrix_engine() -> None:
    policy = build_policy(routing(matrix={"sets": {"s": "a & b"}}))
    assert isinstance(policy, MatrixPolicy)
    assert policy.evict_for("b", run("a", "c")) == run("c")


def test_router_use_group_ignores_a_matrix_block() -> None:
    spec = parse_routing(groups=None, matrix=None, model_ids=MODELS, aliases={}, routing={
        "router": {"use": "group", "settings": {"matrix": {"sets": {"s": "a & b"}}}}})
    assert build_policy(spec).evict_for("b", run("a")) == run("a")


# ------------------------------------------------------------------ through the scheduler
def test_swap_group_loads_serialise() -> None:
    scheduler = Scheduler(MODELS, GroupPolicy(routing(SWAP_PAIR)))
    assert scheduler.request(1, "a") == [StartSwap("a", run())]
    assert scheduler.request(2, "b") == []
    assert scheduler.swap_done("a", None) == [Grant(1)]
    assert scheduler.finished(1) == [StartSwap("b", run("a"))]


def test_non_exclusive_groups_load_in_parallel() -> None:
    scheduler = Scheduler(MODELS, GroupPolicy(routing(TWO_SHARED)))
    assert scheduler.request(1, "a") == [StartSwap("a", run())]
    assert scheduler.request(2, "c") == [StartSwap("c", run())]
