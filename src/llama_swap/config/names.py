"""The names a request may use: model IDs, aliases, peer models and selector IDs.

They share one namespace, so every name must lead to exactly one place; a clash is a load
error at the key that introduced it. Selector targets and preload entries are resolved
against the same namespace.
"""

from typing import Callable, Literal, NamedTuple

from llama_swap.config.fields import KeyPath, PathError
from llama_swap.config.model import ModelConfig
from llama_swap.config.sections import PeerConfig, ProfileConfig, SelectorConfig

Kind = Literal["model", "alias", "peer model", "selector"]


class Owner(NamedTuple):
    """What a name stands for: its kind and where it leads (a model id, `peers.<id>`...)."""

    kind: Kind
    target: str

    def describe(self) -> str:
        return {
            "model": "a model id",
            "alias": f"an alias of model {self.target}",
            "peer model": f"a model of {self.target}",
            "selector": "a selector id",
        }[self.kind]


class Namespace:
    """Every routable name and its owner, claimed in precedence order; clashes are kept."""

    def __init__(self, models: dict[str, ModelConfig]) -> None:
        self.owners = {model_id: Owner("model", model_id) for model_id in models}
        self.bare_peer_models: dict[str, list[str]] = {}
        self.problems: list[PathError] = []

    def claim(self, name: str, owner: Owner, path: KeyPath) -> bool:
        """Give `name` to `owner`, or record why it cannot have it."""
        taken = self.owners.get(name)
        if taken is not None:
            self.problems.append(
                PathError(path, f'{owner.kind} "{name}" is already used as {taken.describe()}'))
            return False
        self.owners[name] = owner
        return True


def claim_aliases(names: Namespace, models: dict[str, ModelConfig]) -> dict[str, str]:
    """Map every alias to its model, including `filters.setParamsByID` keys.

    Keys of `setParamsByID` other than the model's own id or aliases become aliases too.
    """
    aliases: dict[str, str] = {}
    for model_id, model in models.items():
        owner = Owner("alias", model_id)
        for index, alias in enumerate(model.aliases):
            if names.claim(alias, owner, ("models", model_id, "aliases", index)):
                aliases[alias] = model_id
        for key in model.filters.set_params_by_id:
            if key == model_id or aliases.get(key) == model_id:
                continue
            if names.claim(key, owner, ("models", model_id, "filters", "setParamsByID", key)):
                aliases[key] = model_id
                model.aliases.append(key)
    return aliases


def claim_peer_models(names: Namespace, peers: dict[str, PeerConfig]) -> None:
    """Reserve `<peer>/<model>` for each peer model (a model listed twice counts once)."""
    for peer_id, peer in peers.items():
        owner = Owner("peer model", f"peers.{peer_id}")
        for index, model in enumerate(peer.models):
            if model in peer.models[:index]:
                continue
            names.claim(f"{peer_id}/{model}", owner, ("peers", peer_id, "models", index))
            names.bare_peer_models.setdefault(model, []).append(peer_id)


def claim_selectors(names: Namespace, selectors: dict[str, SelectorConfig]) -> None:
    """Reserve selector ids, then check that every target leads somewhere usable."""
    for selector_id in selectors:
        names.claim(selector_id, Owner("selector", selector_id), ("selectors", selector_id))
    for selector_id, selector in selectors.items():
        for index, target in enumerate(selector.targets):
            problem = _target_problem(names, selector, target)
            if problem:
                names.problems.append(PathError(("selectors", selector_id, "targets", index), problem))


def check_pins(names: Namespace, profiles: dict[str, ProfileConfig]) -> None:
    """Every pin leads to a name requests may use — a model, alias, peer model or selector —
    or is `""` (the name is disabled). Pins are applied once, so a pin to another pin's
    name (`x: y, y: x`) is an unknown target, not a loop."""
    for profile_id, profile in profiles.items():
        for pinned, target in profile.pins.items():
            problem = _unknown(names, target) if target else None
            if problem:
                names.problems.append(PathError(("profiles", profile_id, "pins", pinned), problem))


def _unknown(names: Namespace, target: str) -> str | None:
    """Why ``target`` leads nowhere (None when it is a name, or one peer's bare model)."""
    if target in names.owners:
        return None
    peers = names.bare_peer_models.get(target, [])
    if not peers:
        return f'unknown model "{target}"'
    if len(peers) > 1:
        choices = " or ".join(f"{peer}/{target}" for peer in peers)
        return f'"{target}" is served by several peers; use {choices}'
    return None


def _target_problem(names: Namespace, selector: SelectorConfig, target: str) -> str | None:
    owner = names.owners.get(target)
    if owner is not None and owner.kind == "selector":
        return f'"{target}" is a selector; a selector cannot target another selector'
    unknown = _unknown(names, target)
    if unknown:
        return unknown
    local = owner is not None and owner.kind in ("model", "alias")
    if selector.strategy == "warm" and not local:
        return f'strategy warm needs local models; "{target}" is a peer model'
    return None


def spillover_problems(selectors: dict[str, SelectorConfig], local_id: Callable[[str], str | None],
                       evicts: Callable[[str, frozenset[str]], frozenset[str]]) -> list[PathError]:
    """A spillover selector runs its local targets side by side: starting any of them must
    stop none of the others (one group with `swap: false`, or one matrix set), or it would
    swap back and forth under load. ``evicts`` is the eviction policy's decision."""
    problems = []
    for selector_id, selector in selectors.items():
        if selector.strategy != "spillover":
            continue
        local = [model for model in map(local_id, selector.targets) if model is not None]
        if len(set(local)) < len(local):
            problems.append(PathError(("selectors", selector_id, "targets"), "names one local model twice"))
            continue
        for model in local:
            stopped = evicts(model, frozenset(local) - {model})
            if stopped:
                problems.append(PathError(
                    ("selectors", selector_id, "targets"),
                    f"spillover targets must be able to run together, but starting {model} stops "
                    f"{', '.join(sorted(stopped))}: put them in one group with swap: false (or one matrix set)"))
                break
    return problems


def resolve_preload(names: Namespace, preload: list[str]) -> tuple[list[str], list[PathError]]:
    """Local model ids to preload, in order, and a note for each entry that is skipped."""
    ids: list[str] = []
    skipped: list[PathError] = []
    for index, name in enumerate(preload):
        owner = names.owners.get(name)
        if owner is None or owner.kind not in ("model", "alias"):
            path = ("hooks", "on_startup", "preload", index)
            skipped.append(PathError(path, f'"{name}" is not a local model or alias; not preloaded'))
        elif owner.target not in ids:
            ids.append(owner.target)
    return ids, skipped
