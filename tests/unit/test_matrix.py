"""The matrix engine: DSL parsing and compiling, and the cost-minimising solver."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from llama_swap.config.matrix import AllOf, AnyOf, DslError, Expr, Leaf, Ref, compile_sets, parse
from llama_swap.config.routing import MatrixSpec, parse_routing
from llama_swap.routing.matrix import Decision, MatrixPolicy
from llama_swap.routing.scheduler import Scheduler, StartSwap


def show(expr: Expr) -> str:
    """A fully parenthesised rendering, to compare trees (nodes compare by identity)."""
    if isinstance(expr, Leaf):
        return expr.name
    if isinstance(expr, Ref):
        return f"+{expr.name}"
    joiner = " & " if isinstance(expr, AllOf) else " | "
    return "(" + joiner.join(show(part) for part in expr.parts) + ")"


def spec(sets: dict[str, str], costs: dict[str, int] | None = None, models: str = "abcdefgt") -> MatrixSpec:
    parsed = parse_routing(groups=None, matrix={"sets": sets, "evict_costs": costs or {}}, routing=None,
                           model_ids=list(models), aliases={})
    assert parsed.matrix is not None
    return parsed.matrix


def policy(sets: dict[str, str], costs: dict[str, int] | None = None, models: str = "abcdefgt") -> MatrixPolicy:
    return MatrixPolicy(spec(sets, costs, models))


def run(*models: str) -> frozenset[str]:
    return frozenset(models)


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a", "a"),
        ("a & b", "(a & b)"),
        ("a | b", "(a | b)"),
        ("a & b | c", "((a & b) | c)"),
        ("a | b & c", "(a | (b & c))"),
        ("a & (b | c)", "(a & (b | c))"),
        ("((a))", "a"),
        ("a&b&c|d|e&f", "((a & b & c) | d | (e & f))"),
        ("+base & x", "(+base & x)"),
        ("llama-3.1_8B & Qwen2.5", "(llama-3.1_8B & Qwen2.5)"),
        ("\n a \t|\n b ", "(a | b)"),
    ],
)
def test_parse_precedence_and_names(text: str, tree: str) -> None:
    assert show(parse(text)) == tree


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "must not be empty", None),
        ("   ", "must not be empty", None),
        ("a &", "expected a model, +set or ( but found end of expression", 3),
        ("a & | b", 'expected a model, +set or ( but found "|"', 4),
        ("| a", 'expected a model, +set or ( but found "|"', 0),
        ("a & )", 'expected a model, +set or ( but found ")"', 4),
        ("()", 'expected a model, +set or ( but found ")"', 1),
        ("(a | b", 'missing ")" for the "(" opened', 0),
        ("a & (b | (c)", 'missing ")" for the "(" opened', 4),
        ("a b", 'unexpected "b" after a complete expression', 2),
        ("a) & b", 'unexpected ")" after a complete expression', 1),
        ("a / b", 'unexpected character "/"', 2),
        ("  a , b", 'unexpected character ","', 4),
        ("org/model", 'unexpected character "/"', 3),
        ("+ a", 'expected a set name after "+"', 0),
        ("a & +", 'expected a set name after "+"', 4),
    ],
)
def test_syntax_errors_say_what_and_where(text: str, message: str, position: int | None) -> None:
    with pytest.raises(DslError) as caught:
        parse(text)
    assert (caught.value.message, caught.value.position) == (message, position)
    where = "" if position is None else f" at column {position + 1}"
    assert str(caught.value) == message + where


# ---------------------------------------------------------------------------- compiling
def resolve_lower(name: str) -> str:
    if name.islower():
        return name
    raise LookupError(f'unknown var or model "{name}"')


def test_compile_inlines_refs_and_shares_them() -> None:
    compiled = compile_sets({"pair": "+one & b", "one": "a | c"}, resolve_lower)
    assert list(compiled) == ["pair", "one"]
    assert show(compiled["pair"]) == "((a | c) & b)"
    pair = compiled["pair"]
    assert isinstance(pair, AllOf) and pair.parts[0] is compiled["one"]


def test_compile_resolves_names() -> None:
    compiled = compile_sets({"s": "x & y"}, lambda name: {"x": "model-x", "y": "y"}[name])
    assert show(compiled["s"]) == "(model-x & y)"


@pytest.mark.parametrize(
    ("sets", "set_name", "message"),
    [
        ({"a": "b", "b": "(c"}, "b", 'missing ")" for the "(" opened at column 1'),
        ({"a": "b & Zed"}, "a", 'unknown var or model "Zed" at column 5'),
        ({"a": "+b", "b": "c & Nope"}, "b", 'unknown var or model "Nope" at column 5'),
        ({"a": "b | +missing"}, "a", '"+missing" refers to an undefined set at column 5'),
        ({"a": "+a"}, "a", "circular reference: +a -> +a"),
        ({"a": "x", "b": "+c", "c": "+d", "d": "y | +b"}, "b", "circular reference: +b -> +c -> +d -> +b"),
        # a syntax error anywhere is reported before link errors in earlier sets
        ({"a": "Zed", "b": "c &"}, "b", "expected a model, +set or ( but found end of expression at column 4"),
    ],
)
def test_compile_errors_name_the_set(sets: dict[str, str], set_name: str, message: str) -> None:
    with pytest.raises(DslError) as caught:
        compile_sets(sets, resolve_lower)
    assert (caught.value.set_name, str(caught.value)) == (set_name, message)


# ------------------------------------------------------------------------------ solving
@pytest.mark.parametrize(
    ("sets", "costs", "target", "running", "evict"),
    [
        # target already running: nothing, even in a combination no set allows
        ({"s": "a | b"}, {}, "a", run("a", "b"), run()),
        # coexist in one set
        ({"s": "a & b"}, {}, "b", run("a"), run()),
        # swap evicts what conflicts
        ({"s1": "a & b", "s2": "c"}, {}, "c", run("a", "b"), run("a", "b")),
        ({"s1": "a & b", "s2": "a & c"}, {}, "c", run("a", "b"), run("b")),
        # subset semantics: b may join a without c running
        ({"s": "a & b & c"}, {}, "b", run("a"), run()),
        ({"s": "a & b & c"}, {}, "a", run(), run()),
        # a model in no set runs alone
        ({"s": "a & b"}, {}, "t", run("a", "b"), run("a", "b")),
        # a running model in no set is always evicted
        ({"s": "a & b"}, {}, "b", run("a", "t"), run("t")),
        # costs: keep the expensive model
        ({"s1": "t & a", "s2": "t & b"}, {"a": 5}, "t", run("a", "b"), run("b")),
        ({"s1": "t & a", "s2": "t & b"}, {"b": 5}, "t", run("a", "b"), run("a")),
        ({"s1": "t & a & b", "s2": "t & c"}, {"c": 3}, "t", run("a", "b", "c"), run("a", "b")),
        ({"s1": "t & a & b", "s2": "t & c"}, {"c": 2}, "t", run("a", "b", "c"), run("c")),  # tie: s1 first
        ({"s1": "t & a & b", "s2": "t & c"}, {"a": 2}, "t", run("a", "b", "c"), run("c")),
        # ties go to definition order: set order, then term order
        ({"first": "t & a", "second": "t & b"}, {}, "t", run("a", "b"), run("b")),
        ({"first": "t & b", "second": "t & a"}, {}, "t", run("a", "b"), run("a")),
        ({"s": "t & a | t & b"}, {}, "t", run("a", "b"), run("b")),
        ({"s": "t & b | t & a"}, {}, "t", run("a", "b"), run("a")),
        ({"s": "t & (b | a)"}, {}, "t", run("a", "b"), run("a")),
        # +ref: a set inlined into a bigger one
        ({"base": "a | b", "big": "+base & t"}, {}, "t", run("a"), run()),
        ({"base": "a | b", "big": "+base & t"}, {}, "t", run("a", "b"), run("b")),
        ({"base": "a | b", "big": "+base & t"}, {"a": 4}, "t", run("a", "b"), run("b")),
        ({"base": "a | b", "big": "+base & t"}, {"b": 4}, "t", run("a", "b"), run("a")),
        # llama-swap's own tie-break case: any three of t, a, b, c
        ({"pool": "(t | a | b | c)", "all": "+pool & +pool & +pool"}, {}, "t", run("a", "b", "c"), run("c")),
        ({"pool": "(t | a | b | c)", "all": "+pool & +pool & +pool"}, {"c": 10}, "t", run("a", "b", "c"), run("b")),
    ],
)
def test_solver(sets: dict[str, str], costs: dict[str, int], target: str, running: frozenset[str],
                evict: frozenset[str]) -> None:
    assert policy(sets, costs).evict_for(target, running) == evict


@pytest.mark.parametrize(
    ("target", "running", "decision"),
    [
        ("t", run("b", "d"), Decision("t", run("d"), 1, "small", "t & b")),  # tie: first set
        ("t", run("a", "b"), Decision("t", run(), 0, "big", "t & (a | b) & (b | c)")),
        ("t", run("a", "b", "c"), Decision("t", run("c"), 1, "big", "t & (a | b) & (b | c)")),
        ("a", run("a", "b"), Decision("a", run(), 0)),
        ("g", run("a", "b"), Decision("g", run("a", "b"), 4)),
    ],
)
def test_explain_names_the_set_its_text_and_the_cost(target: str, running: frozenset[str],
                                                       decision: Decision) -> None:
    sets = {"small": "t & b", "big": "t & (a | b) & (b | c)"}
    assert policy(sets, {"a": 3}).explain(target, running) == decision


def test_vars_resolve_in_expressions() -> None:
    parsed = parse_routing(
        groups=None,
        matrix={"vars": {"L": "org/llama:8b", "a": "b"}, "sets": {"s": "L & a"}},
        routing=None, model_ids=["org/llama:8b", "a", "b", "c"], aliases={},
    )
    assert parsed.matrix is not None
    solver = MatrixPolicy(parsed.matrix)
    assert solver.evict_for("b", run("org/llama:8b", "a")) == run("a")  # the var "a" is model b
    assert solver.evict_for("a", run("b")) == run("b")  # model a is in no set


# ----------------------------------------------------------------------- against brute force
def expand(expr: Expr) -> list[frozenset[str]]:
    """Every allowed set, the slow way (Cartesian expansion)."""
    if isinstance(expr, Leaf):
        return [frozenset({expr.name})]
    if isinstance(expr, AnyOf):
        return [s for part in expr.parts for s in expand(part)]
    assert isinstance(expr, AllOf)
    return [frozenset().union(*combo) for combo in itertools.product(*(expand(p) for p in expr.parts))]


def random_expr(rng: random.Random, models: str, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(models)
    operator = rng.choice([" & ", " | "])
    return "(" + operator.join(random_expr(rng, models, depth - 1) for _ in range(rng.randint(2, 3))) + ")"


def test_solver_matches_brute_force_on_random_matrices() -> None:
    rng = random.Random(7)
    models = "abcdeft"
    for _ in range(300):
        sets = {f"s{i}": random_expr(rng, models, 3) for i in range(rng.randint(1, 3))}
        costs = {m: rng.randint(1, 4) for m in models if rng.random() < 0.5}
        matrix = spec(sets, costs, models)
        solver = MatrixPolicy(matrix)
        family = {name: expand(expr) for name, expr in matrix.exprs.items()}
        target = rng.choice(models)
        running = frozenset(m for m in models if m != target and rng.random() < 0.5)
        decision = solver.explain(target, running)
        options = [sum(costs.get(m, 1) for m in running - allowed)
                   for name in family for allowed in family[name] if target in allowed]
        assert decision.cost == min(options, default=sum(costs.get(m, 1) for m in running))
        assert decision.cost == sum(costs.get(m, 1) for m in decision.evict)
        if decision.set_name is not None:
            keep = (running - decision.evict) | {target}
            assert any(keep <= allowed for allowed in family[decision.set_name])
            first_best = next(name for name in family if any(
                target in allowed and sum(costs.get(m, 1) for m in running - allowed) == decision.cost
                for allowed in family[name]))
            assert decision.set_name == first_best


# ------------------------------------------------------------------------------ scale
def test_thirty_alternative_pairs_do_not_expand() -> None:
    models = [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)]
    text = " & ".join(f"(a{i} | b{i})" for i in range(30))
    parsed = parse_routing(groups=None, matrix={"sets": {"wide": text}}, routing=None, model_ids=models, aliases={})
    assert parsed.matrix is not None
    solver = MatrixPolicy(parsed.matrix)
    started = time.perf_counter()
    assert solver.evict_for("b3", run("a1", "a2", "a3", "b7")) == run("a3")
    assert solver.evict_for("a29", run(*(f"a{i}" for i in range(29)))) == run()
    assert time.perf_counter() - started < 1.0


def test_doubling_refs_are_evaluated_once() -> None:
    sets = {"s0": "x | y"} | {f"s{i}": f"+s{i - 1} & +s{i - 1}" for i in range(1, 40)}
    solver = policy(sets, models="xyz")
    started = time.perf_counter()
    assert solver.evict_for("x", run("y", "z")) == run("z")
    assert time.perf_counter() - started < 1.0


def test_more_than_sixty_four_running_models() -> None:
    models = [f"m{i}" for i in range(100)]
    text = " & ".join(models)
    parsed = parse_routing(groups=None, matrix={"sets": {"all": text, "solo": "m0"}}, routing=None,
                           model_ids=models, aliases={})
    assert parsed.matrix is not None
    assert MatrixPolicy(parsed.matrix).evict_for("m99", frozenset(models[:99])) == run()


# ------------------------------------------------------------------ through the scheduler
def test_models_of_one_set_load_in_parallel() -> None:
    scheduler = Scheduler(["a", "b", "c"], policy({"ab": "a & b", "c": "c"}))
    assert scheduler.request(1, "a") == [StartSwap("a", run())]
    assert scheduler.request(2, "b") == [StartSwap("b", run())]


def test_incompatible_model_waits_for_the_load_in_flight() -> None:
    scheduler = Scheduler(["a", "b", "c"], policy({"ab": "a & b", "c": "c"}))
    assert scheduler.request(1, "a") == [StartSwap("a", run())]
    assert scheduler.request(2, "c") == []
    assert scheduler.queued() == [(2, "c")]
