"""The `data` records of GET /v1/models, shaped like llama-swap's (OpenRouter-style) listing,
with each local model's `status` as llama.cpp's router gives it (`value` and `args`), so
llama.cpp's web UI and agents built for its router read our listing unchanged.

Pure functions of the config and the load state, so the handler stays a thin wrapper and
the shape can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llama_swap.config import Capabilities, Config, ModelConfig
from llama_swap.process import ModelProcess, ProcessState
from llama_swap.redact import mask_secrets, redact_argv
from llama_swap.routing.names import Names
from llama_swap.warm.command import takes_part

StatusOf = Callable[[str], dict[str, Any]]
"""A local model's `status` record (`router_status`), by model id."""

# Our states as llama.cpp's router names them (`unloaded`, `loading`, `loaded`): a model
# being stopped stays `loaded` until its process is gone, as in llama-server's router, and a
# failed start is `unloaded` with `failed: true` (llama-server adds `exit_code`; we say why).
ROUTER_STATUS = {
    ProcessState.STOPPED: "unloaded",
    ProcessState.STARTING: "loading",
    ProcessState.READY: "loaded",
    ProcessState.STOPPING: "loaded",
    ProcessState.FAILED: "unloaded",
}

# Top-level record fields owned by the capabilities renderer; a model that sets
# `capabilities` cannot also smuggle them in through `metadata`.
RENDERED_KEYS = frozenset({"architecture", "capabilities", "supported_parameters", "context_length"})

# (capability flag, modality that must be an input, modality that must be an output)
_MODALITY_FLAGS = (
    ("audio_transcriptions", "audio", "text"),
    ("audio_speech", "text", "audio"),
    ("image_generation", "text", "image"),
    ("image_to_image", "image", "image"),
)


def router_status(state: ProcessState, argv: list[str], error: str | None) -> dict[str, Any]:
    """A local model's `status`: llama.cpp's value for ``state`` and the command it runs
    (or would run) as `args`, secrets hidden (`--api-key` values, the configured keys)."""
    status: dict[str, Any] = {"value": ROUTER_STATUS[state], "args": [mask_secrets(arg) for arg in redact_argv(argv)]}
    if state is ProcessState.FAILED:
        status["failed"] = True
        status["error"] = error
    return status


def model_records(config: Config, created: int, status_of: StatusOf, *, aliases: bool | None = None) -> list[dict[str, Any]]:
    """Listed local models (and their aliases when ``aliases``, by default when
    `includeAliasesInList`), sorted by id."""
    with_aliases = config.include_aliases_in_list if aliases is None else aliases
    records: list[dict[str, Any]] = []
    for model_id, model in config.models.items():
        if model.unlisted:
            continue
        status = status_of(model_id)
        internal: dict[str, Any] = {"type": "model"}
        if model.aliases:
            internal["aliases"] = list(model.aliases)
        records.append(_record(model_id, model, created, status, internal))
        if with_aliases:
            for alias in model.aliases:
                records.append(_record(alias, model, created, status, {"type": "alias", "modelID": model_id}))
    records.sort(key=lambda record: record["id"])
    return records


def routed_records(config: Config, names: Names, created: int, status_of: StatusOf) -> list[dict[str, Any]]:
    """What else a request may name, as llama-swap lists it: every peer model as
    `<peer>/<model>`, the listed selectors, and the active profile's pins that are not a
    name already (a disabled pin is not listed). Their `status` is `loaded` when a local
    model behind them is in any non-stopped state (peers: always `unloaded`)."""
    def loaded(model_id: str) -> bool:
        return model_id in config.models and status_of(model_id)["value"] != "unloaded"

    records = []
    for peer_id, peer in sorted(config.peers.items()):
        for model in dict.fromkeys(peer.models):
            records.append(_plain(f"{peer_id}/{model}", created, False, name=f"{peer_id}: {model}",
                                  llamaswap={"type": "peer", "peerID": peer_id}))
    for selector_id, selector in sorted(config.selectors.items()):
        if selector.unlisted:
            continue
        counted = selector.targets[:1] if selector.strategy == "pin" else selector.targets
        internal: dict[str, Any] = {"type": "selector", "strategy": selector.strategy, "targets": list(selector.targets)}
        if selector.strategy == "spillover":
            internal["spillover"] = selector.settings.spillover
        records.append(_plain(selector_id, created, any(loaded(names.target_id(t)) for t in counted),
                              name=selector.name.strip(), description=selector.description.strip(),
                              llamaswap={**selector.metadata, **internal}))
    for pin, target in sorted((names.pins or {}).items()):
        if target and config.model_for(pin) is None and names.peer_model(pin) is None and pin not in config.selectors:
            records.append(_plain(pin, created, loaded(names.target_id(target)),
                                  llamaswap={"type": "profile", "profile": names.active, "target": target}))
    return records


def _plain(record_id: str, created: int, is_loaded: bool, *, llamaswap: dict[str, Any], name: str = "",
           description: str = "") -> dict[str, Any]:
    record: dict[str, Any] = {"id": record_id, "object": "model", "created": created, "owned_by": "llama-swap"}
    if name:
        record["name"] = name
    if description:
        record["description"] = description
    record["meta"] = {"llamaswap": llamaswap}
    record["status"] = {"value": "loaded" if is_loaded else "unloaded"}
    return record


def status_records(config: Config, processes: Mapping[str, ModelProcess],
                   warm_bytes: Mapping[str, int]) -> list[dict[str, Any]]:
    """Every local model with its live state: `GET /api/models` and the `modelStatus` event;
    `warm_cache_bytes` is the size of its saved KV caches (None: no warm swaps for it)."""
    records = []
    for model_id, model in sorted(config.models.items()):
        process = processes.get(model_id)
        state = process.state if process is not None else ProcessState.STOPPED
        rendered = _render_capabilities(model.capabilities)
        records.append({
            "id": model_id,
            "name": model.name.strip(),
            "description": model.description.strip(),
            "state": state.value,
            "unlisted": model.unlisted,
            "peerID": "",
            "aliases": list(model.aliases),
            "capabilities": sorted(rendered.get("capabilities", {})),
            "context_length": rendered.get("context_length"),
            "ttl": model.ttl,
            "pid": process.pid if process is not None else None,
            "error": process.last_error if state is ProcessState.FAILED and process is not None else None,
            "warm_cache_bytes": warm_bytes.get(model_id, 0) if takes_part(model.warm_swap, model.argv) else None,
        })
    return records


def _record(
    record_id: str, model: ModelConfig, created: int, status: dict[str, Any], internal: dict[str, Any],
) -> dict[str, Any]:
    """One record; `internal` keys (type, aliases, modelID) win over user metadata."""
    record: dict[str, Any] = {"id": record_id, "object": "model", "created": created, "owned_by": "llama-swap"}
    if name := model.name.strip():
        record["name"] = name
    if description := model.description.strip():
        record["description"] = description
    caps = model.capabilities
    record.update(_render_capabilities(caps))
    metadata = model.metadata
    if _configured(caps):
        metadata = {key: value for key, value in metadata.items() if key not in RENDERED_KEYS}
    meta: dict[str, Any] = {"llamaswap": {**metadata, **internal}}
    if caps.context > 0:
        meta["n_ctx"] = caps.context
    record["meta"] = meta
    record["status"] = status
    return record


def _configured(caps: Capabilities) -> bool:
    return bool(caps.inputs or caps.outputs or caps.tools or caps.reranker or caps.context)


def _render_capabilities(caps: Capabilities) -> dict[str, Any]:
    """`architecture`, `capabilities`, `supported_parameters`, `context_length`; empty parts omitted."""
    fields: dict[str, Any] = {}
    architecture: dict[str, Any] = {}
    if caps.inputs:
        architecture["input_modalities"] = list(caps.inputs)
    if caps.outputs:
        architecture["output_modalities"] = list(caps.outputs)
    if caps.inputs and caps.outputs:
        architecture["modality"] = "+".join(caps.inputs) + "->" + "+".join(caps.outputs)
    if architecture:
        fields["architecture"] = architecture
    flags = {"vision": True} if "image" in caps.inputs else {}
    for flag, needs_in, needs_out in _MODALITY_FLAGS:
        if needs_in in caps.inputs and needs_out in caps.outputs:
            flags[flag] = True
    if caps.tools:
        flags["function_calling"] = True
    if caps.reranker:
        flags["reranker"] = True
    if flags:
        fields["capabilities"] = flags
    if caps.tools:
        fields["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        fields["context_length"] = caps.context
    return fields
