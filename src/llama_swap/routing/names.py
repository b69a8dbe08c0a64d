"""Which destination a requested model name means, per request: llama-swap's order of
profile pin → selector → model id or alias → peer model.

Pure decisions over the config, the active profile and the models' states; the only state
kept is the spillover selectors' count of requests each target has in flight (reserved
when chosen, released when the request ends). A reload builds a new `Names`, so the active
profile is cleared then, as in llama-swap.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple

from llama_swap.config import Config, PeerConfig, SelectorConfig
from llama_swap.config.fields import Filters
from llama_swap.errors import HTTPError, model_not_found
from llama_swap.process import ProcessState
from llama_swap.wire.upstream import address

States = Callable[[str], ProcessState]
"""The state of a local model's process, by model id."""


class PeerRoute:
    """How requests reach one peer: its address and timeouts, and its key, which replaces
    whatever key the client sent (`Authorization: Bearer` and `x-api-key`, as in llama-swap)."""

    def __init__(self, peer: PeerConfig) -> None:
        timeouts = peer.timeouts
        self.url = peer.proxy
        self.upstream = address(peer.proxy, connect=timeouts.connect, tls_handshake=timeouts.tls_handshake,
                                response_header=timeouts.response_header, keepalive=timeouts.keepalive, idle_conn=timeouts.idle_conn)
        key = peer.api_key.encode("latin-1")
        self.key_fields = b"Authorization: Bearer %s\r\nx-api-key: %s\r\n" % (key, key) if key else b""
        self.replaced = frozenset({b"authorization", b"x-api-key"}) if key else frozenset()


class PeerModel:
    """A peer's model as the request path needs it: its route, and the filters its requests
    go through (`use_model_name`: the peer's own name for it, put into `model`). A class,
    not a tuple: the filters' compiled plan is cached per object (weakly)."""

    def __init__(self, peer_id: str, route: PeerRoute, filters: Filters, model: str) -> None:
        self.peer_id = peer_id
        self.route = route
        self.fqn = f"{peer_id}/{model}"
        self.use_model_name = model
        self.filters = filters


class Destination(NamedTuple):
    """Where a request goes."""

    model: str  # a local model id, or a peer model's `<peer>/<model>`
    requested: str  # the name after pins and selectors (what `setParamsByID` keys on)
    peer: PeerModel | None  # set for a peer's model
    selector: str | None  # the selector that chose it


class Names:
    """Resolves requested names for one config; holds the active profile."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.active: str | None = None
        self.pins: dict[str, str] | None = None  # the active profile's pins; None when none is active
        self._peer_models: dict[str, PeerModel] = {}
        bare: dict[str, list[PeerModel]] = {}
        for peer_id in sorted(config.peers):
            peer = config.peers[peer_id]
            route = PeerRoute(peer)
            for model in dict.fromkeys(peer.models):
                found = PeerModel(peer_id, route, peer.filters, model)
                self._peer_models[found.fqn] = found
                bare.setdefault(model, []).append(found)
        for model, offered in bare.items():  # a bare name: only when one peer has it and nothing else is called so
            if len(offered) == 1 and model not in self._peer_models and config.model_for(model) is None \
                    and model not in config.selectors:
                self._peer_models[model] = offered[0]
        self._spillover = {selector_id: Spillover(selector.settings.spillover)
                           for selector_id, selector in config.selectors.items() if selector.strategy == "spillover"}

    # ------------------------------------------------------------------ profiles
    def activate(self, name: str | None) -> bool:
        """Make ``name`` the active profile (None: none); whether it changed. KeyError when
        there is no such profile."""
        if name is not None and name not in self.config.profiles:
            raise KeyError(name)
        changed = name != self.active
        self.active = name
        self.pins = dict(self.config.profiles[name].pins) if name is not None else None
        return changed

    def pinned(self, name: str) -> str:
        """The name after the active profile's pin (a model id is never pinned over)."""
        pins = self.pins
        if pins is None or name not in pins or name in self.config.models:
            return name
        target = pins[name]
        if not target:
            raise HTTPError(404, f"model '{name}' is disabled by the active profile '{self.active}'")
        return target

    # ------------------------------------------------------------------ resolution
    def resolve(self, name: str, states: States) -> Destination:
        """The destination of a request for ``name`` (404 unknown or disabled, 503 when a
        selector has no target). A spillover choice is reserved: `release` it when done."""
        name = self.pinned(name)
        selector_id = None
        selector = self.config.selectors.get(name)
        if selector is not None:
            selector_id, name = name, self._choose(name, selector, states)
        model = self.config.model_for(name)
        if model is not None:
            return Destination(model.id, name, None, selector_id)
        peer = self._peer_models.get(name)
        if peer is not None:
            return Destination(peer.fqn, name, peer, selector_id)
        raise model_not_found(name)

    def release(self, destination: Destination) -> None:
        """A request that a spillover selector sent to ``destination`` has ended."""
        if destination.selector is not None and destination.selector in self._spillover:
            self._spillover[destination.selector].release(destination.model)

    def peer_model(self, name: str) -> PeerModel | None:
        """A peer's model by `<peer>/<model>` (or its bare name when only one peer has it)."""
        return self._peer_models.get(name)

    def target_id(self, target: str) -> str:
        """What a selector's target names: a local model id, or a peer model's `<peer>/<model>`."""
        model = self.config.model_for(target)
        if model is not None:
            return model.id
        peer = self._peer_models.get(target)
        return peer.fqn if peer is not None else target

    def _choose(self, selector_id: str, selector: SelectorConfig, states: States) -> str:
        if selector.strategy == "pin":
            return selector.targets[0]
        if selector.strategy == "warm":
            return warm(selector.targets, [states(self.target_id(t)) for t in selector.targets])
        chosen = self._spillover[selector_id].choose(
            [(t, self.target_id(t), self.peer_model(t) is not None) for t in selector.targets], states)
        if chosen is None:
            raise HTTPError(503, f"selector '{selector_id}' has no available target: every local target is stopping")
        return chosen


def warm(targets: list[str], states: list[ProcessState]) -> str:
    """`warm`: the first ready target, else the first starting one, else the first (a cold start)."""
    for wanted in (ProcessState.READY, ProcessState.STARTING):
        for target, state in zip(targets, states):
            if state is wanted:
                return target
    return targets[0]


class Spillover:
    """`spillover`: fill the active targets up to ``per_target`` requests each (the least busy
    first, round robin among ties), then start the next cold target; when none is cold left,
    the least busy active one takes more. Peers are active while they have requests."""

    def __init__(self, per_target: int) -> None:
        self.per_target = per_target
        self.inflight: dict[str, int] = {}
        self._turn = itertools.count()

    def choose(self, targets: list[tuple[str, str, bool]], states: States) -> str | None:
        """``targets``: (name, model id or peer fqn, is a peer). The chosen name, reserved."""
        active: list[tuple[str, str]] = []
        cold: list[tuple[str, str]] = []
        for name, model, is_peer in targets:
            busy = self.inflight.get(model, 0) > 0
            if is_peer:
                (active if busy else cold).append((name, model))
                continue
            state = states(model)
            if state is ProcessState.STOPPING:
                continue
            if state in (ProcessState.READY, ProcessState.STARTING) or busy:
                active.append((name, model))
            else:
                cold.append((name, model))
        if not active:
            return self._reserve(cold[0]) if cold else None
        least = min(self.inflight.get(model, 0) for _, model in active)
        if least >= self.per_target and cold:
            return self._reserve(cold[0])
        tied = [target for target in active if self.inflight.get(target[1], 0) == least]
        return self._reserve(tied[next(self._turn) % len(tied)])

    def release(self, model: str) -> None:
        if self.inflight.get(model, 0) > 0:
            self.inflight[model] -= 1

    def _reserve(self, target: tuple[str, str]) -> str:
        name, model = target
        self.inflight[model] = self.inflight.get(model, 0) + 1
        return name
