"""Resolving requested names (routing/names.py): profile pins, selectors, peers — pure."""

from __future__ import annotations

import pytest

from llama_swap.config import ConfigError, load_config_text
from llama_swap.errors import HTTPError
from llama_swap.process import ProcessState
from llama_swap.routing.names import Names, Spillover, warm

CONFIG = """
groups:
  g: {swap: false, members: [a, b]}
models:
  a:
    cmd: srv --port ${PORT}
    aliases: [alpha]
  b:
    cmd: srv --port ${PORT}
peers:
  p1:
    proxy: http://10.0.0.1:8080
    models: [shared, only1]
  p2:
    proxy: http://10.0.0.2:8080
    models: [shared]
selectors:
  pinned: {strategy: pin, targets: [b, a]}
  spread: {strategy: spillover, targets: [a, b, p1/only1], settings: {spillover: 2}}
profiles:
  work:
    pins: {alpha: b, a: b, fancy: spread, gone: ""}
"""

STOPPED = ProcessState.STOPPED
READY = ProcessState.READY


def names() -> Names:
    return Names(load_config_text(CONFIG))


def test_local_names_peer_models_and_unknown_ones() -> None:
    resolver = names()
    assert resolver.resolve("alpha", lambda _: STOPPED)[:3] == ("a", "alpha", None)
    peer = resolver.resolve("p1/only1", lambda _: STOPPED)
    assert peer.model == "p1/only1" and peer.peer is not None and peer.peer.use_model_name == "only1"
    assert resolver.resolve("only1", lambda _: STOPPED).model == "p1/only1"  # one peer has it: the bare name
    with pytest.raises(HTTPError) as shared:
        resolver.resolve("shared", lambda _: STOPPED)  # two peers have it: only the full names work
    assert shared.value.status == 404
    assert resolver.resolve("p2/shared", lambda _: STOPPED).peer.peer_id == "p2"  # type: ignore[union-attr]


def test_a_peer_key_replaces_the_clients() -> None:
    config = load_config_text("peers:\n  p:\n    proxy: https://example.org/api\n    apiKey: k1\n    models: [m]\n")
    route = Names(config).peer_model("p/m").route  # type: ignore[union-attr]
    assert route.key_fields == b"Authorization: Bearer k1\r\nx-api-key: k1\r\n"
    assert route.replaced == {b"authorization", b"x-api-key"}
    assert (route.upstream.host, route.upstream.port, route.upstream.prefix) == ("example.org", 443, b"/api")
    with pytest.raises(ConfigError, match="apiKey: must be printable ASCII"):
        load_config_text("peers:\n  p:\n    proxy: http://x\n    apiKey: 'a b'\n    models: [m]\n")


def test_profile_pins_rewrite_but_never_over_a_model_id() -> None:
    resolver = names()
    assert resolver.pins is None
    with pytest.raises(KeyError):
        resolver.activate("nope")
    assert resolver.activate("work") and not resolver.activate("work")
    assert resolver.resolve("alpha", lambda _: STOPPED)[:2] == ("b", "b")
    assert resolver.resolve("a", lambda _: STOPPED).model == "a"  # a model id wins over a pin
    assert resolver.resolve("fancy", lambda _: STOPPED).selector == "spread"  # a pin may lead to a selector
    with pytest.raises(HTTPError) as gone:
        resolver.resolve("gone", lambda _: STOPPED)
    assert (gone.value.status, gone.value.message) == (404, "model 'gone' is disabled by the active profile 'work'")
    assert resolver.activate(None) and resolver.resolve("alpha", lambda _: STOPPED).model == "a"


def test_pin_and_warm_strategies() -> None:
    resolver = names()
    assert resolver.resolve("pinned", lambda _: READY).model == "b"
    assert warm(["a", "b"], [STOPPED, STOPPED]) == "a"
    assert warm(["a", "b"], [ProcessState.STARTING, READY]) == "b"
    assert warm(["a", "b", "c"], [STOPPED, ProcessState.STARTING, ProcessState.STARTING]) == "b"


def test_spillover_fills_active_targets_then_starts_cold_ones_and_releases() -> None:
    state = Spillover(per_target=2)
    targets = [("a", "a", False), ("b", "b", False), ("p", "p/m", True)]
    states = {"a": READY, "b": STOPPED}
    chosen = [state.choose(targets, states.get) for _ in range(2)]
    assert chosen == ["a", "a"]  # the ready target takes its two first
    assert state.choose(targets, states.get) == "b"  # full: the first cold target starts
    states["b"] = ProcessState.STARTING
    assert state.choose(targets, states.get) == "b"  # b is active now and the least busy
    assert state.choose(targets, states.get) == "p"  # a and b are full: the peer is next
    state.release("a")
    state.release("a")
    assert state.choose(targets, states.get) == "a"  # a's requests ended: the least busy again
    states.update(a=ProcessState.STOPPING, b=ProcessState.STOPPING)
    fresh = Spillover(per_target=1)
    assert fresh.choose(targets[:2], states.get) is None  # every local target stopping: no target


def test_spillover_targets_must_be_able_to_run_together() -> None:
    alone = CONFIG.replace("groups:\n  g: {swap: false, members: [a, b]}\n", "")
    with pytest.raises(ConfigError, match="spillover targets must be able to run together, but starting a stops b"):
        load_config_text(alone)
