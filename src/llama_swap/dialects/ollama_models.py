"""The `/v1/models` records as Ollama lists and shows models (`/api/tags`, `/api/ps`, `/api/show`).

Ollama describes files it manages (digest, size, quantization); here a model is a command
that starts a server, so what is not known is empty or zero, and the digest is a stable
hash of the name (clients use it to tell entries apart).
"""

from __future__ import annotations

import hashlib
from typing import Any

from llama_swap.dialects.ollama_answers import created_at

ARCHITECTURE = "llama-swap"  # `model_info`'s `general.architecture`: the prefix of its context length key
FOREVER_SECONDS = 2**63 / 1e9  # Go's longest duration: what Ollama shows for a model kept loaded forever


def details() -> dict[str, Any]:
    return {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
            "quantization_level": ""}


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def tag(record: dict[str, Any]) -> dict[str, Any]:
    """One `/api/tags` entry for a `/v1/models` record."""
    name = record["id"]
    return {"name": name, "model": name, "modified_at": created_at(record["created"]), "size": 0,
            "digest": digest(name), "details": details()}


def running(record: dict[str, Any], size: int, unloads_in: float | None, now: float) -> dict[str, Any]:
    """One `/api/ps` entry: ``size`` the resident bytes of its server, ``unloads_in`` the
    seconds until it is unloaded for being idle (None: never)."""
    name = record["id"]
    entry = {"name": name, "model": name, "size": size, "digest": digest(name), "details": details(),
             "expires_at": created_at(now + (FOREVER_SECONDS if unloads_in is None else unloads_in)),
             "size_vram": 0}
    if record.get("context_length"):
        entry["context_length"] = record["context_length"]
    return entry


def show(record: dict[str, Any]) -> dict[str, Any]:
    """`/api/show` for a record: its capabilities as Ollama names them, its context length
    (when configured) under `model_info`."""
    flags = record.get("capabilities") or {}
    capabilities = ["completion"]
    if flags.get("function_calling"):
        capabilities.append("tools")
    if flags.get("vision"):
        capabilities.append("vision")
    info: dict[str, Any] = {"general.architecture": ARCHITECTURE, "general.name": record.get("name") or record["id"]}
    if record.get("context_length"):
        info[f"{ARCHITECTURE}.context_length"] = record["context_length"]
    return {"modelfile": "", "parameters": "", "template": "", "details": details(), "model_info": info,
            "capabilities": capabilities, "modified_at": created_at(record["created"])}
