"""Eviction policies end to end: groups (swap / exclusive / persistent) and the matrix.

Each step loads one model with GET /upstream/<model>/load, which returns once the
model is ready (its evictions done), then looks at /running and at process ids.
"""

from __future__ import annotations

import textwrap

from tests.fakes import fake_cmd, is_alive
from tests.integration.conftest import RunningService


def config(routing_yaml: str, *models: str) -> str:
    """The (indented) routing part, then a fake upstream for each model."""
    return textwrap.dedent(routing_yaml) + "models:\n" + "".join(
        f"  {name}:\n    cmd: {fake_cmd(name=name)}\n" for name in models
    )


def load(service: RunningService, model: str) -> list[str]:
    """Load ``model``; returns what runs afterwards."""
    response = service.http.get(f"/upstream/{model}/load")
    assert response.status_code == 200, response.text
    return service.http.get("/running").json()["running"]


def test_groups_swap_exclusive_and_persistent(start_service) -> None:
    service = start_service(config(
        """
        routing:
          router:
            use: group
            settings:
              groups:
                g1: {swap: true, exclusive: true, members: [a, b]}
                g2: {swap: false, exclusive: false, members: [c, d]}
                p: {persistent: true, members: [e]}
        """,
        "a", "b", "c", "d", "e",
    ))
    assert load(service, "e") == ["e"]
    e_pid = service.pid_of("e")
    assert load(service, "a") == ["a", "e"]  # exclusive, but p is persistent
    a_pid = service.pid_of("a")
    assert load(service, "b") == ["b", "e"]  # g1 swaps: a stops
    assert not is_alive(a_pid)
    b_pid = service.pid_of("b")
    # the compatibility gotcha: a non-exclusive group leaves a running exclusive one alone
    assert load(service, "c") == ["b", "c", "e"]
    assert load(service, "d") == ["b", "c", "d", "e"]  # g2 does not swap: c and d coexist
    c_pid, d_pid = service.pid_of("c"), service.pid_of("d")
    # exclusive g1 stops its sibling and the other non-persistent group, never e
    assert load(service, "a") == ["a", "e"]
    assert not any(is_alive(pid) for pid in (b_pid, c_pid, d_pid))
    assert service.pid_of("e") == e_pid
    assert load(service, "e") == ["a", "e"]  # already running: nothing happens

    # persistent only protects e from others; p itself is exclusive (the default)
    assert service.http.delete("/upstream/e").status_code == 200
    assert service.http.get("/running").json() == {"running": ["a"]}
    assert load(service, "e") == ["e"]


def test_legacy_top_level_groups_and_the_implicit_default_group(start_service) -> None:
    service = start_service(config(
        """
        groups:
          pair:
            swap: false
            members: [x, y]
        """,
        "x", "y", "loner", "other",
    ))
    assert load(service, "x") == ["x"]
    assert load(service, "y") == ["x", "y"]  # swap: false
    # models in no group form one exclusive, swapping group
    assert load(service, "loner") == ["loner"]
    assert load(service, "other") == ["other"]
    assert load(service, "x") == ["x"]  # "pair" is exclusive by default


def test_matrix_evicts_the_cheapest_and_keeps_sets_together(start_service) -> None:
    service = start_service(config(
        """
        routing:
          router:
            use: matrix
            settings:
              matrix:
                vars: {a: alpha, b: beta, c: gamma, d: delta}
                evict_costs: {a: 10}
                sets:
                  pair: "a & b"
                  bc: "b & c"
                  cheap: "a & (c | d)"
        """,
        "alpha", "beta", "gamma", "delta", "solo",
    ))
    assert load(service, "alpha") == ["alpha"]
    alpha_pid = service.pid_of("alpha")
    assert load(service, "beta") == ["alpha", "beta"]  # "pair": they coexist
    beta_pid = service.pid_of("beta")
    # gamma fits with beta ("bc", defined first) or with alpha ("cheap"): evicting
    # alpha costs 10, beta 1, so beta goes
    assert load(service, "gamma") == ["alpha", "gamma"]
    assert not is_alive(beta_pid)
    gamma_pid = service.pid_of("gamma")
    assert load(service, "delta") == ["alpha", "delta"]  # c | d: one of them
    assert not is_alive(gamma_pid)
    assert service.pid_of("alpha") == alpha_pid
    # a model in no set runs alone
    assert load(service, "solo") == ["solo"]
    assert not is_alive(alpha_pid)
    # a set is a ceiling, not a bundle: only the requested member starts
    assert load(service, "beta") == ["beta"]
    assert load(service, "gamma") == ["beta", "gamma"]  # "bc" now evicts nothing
