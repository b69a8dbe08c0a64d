"""Per-model request body rewrites, applied in llama-swap's order before forwarding upstream.

JSON bodies: `useModelName`, then `stripParams`, then `setParams`, then
`setParamsByID[<name the client used>]`. A body starting with `{` counts as JSON whatever
its label, as in `extract.py`. Multipart forms: `useModelName` only. Anything else
(urlencoded forms, the GET `?model=` query) passes through untouched.

This runs on every inference request, so each model's filters are compiled once into a
plan, a model without filters costs a dict lookup, and a body is only parsed when some
filter can change it.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

import orjson

from llama_swap.config import Filters
from llama_swap.errors import HTTPError

PROTECTED_PARAM = "model"  # routing depends on it: no strip/set filter may touch it

Path = tuple[str, ...]
Assignment = tuple[Path, bytes]  # the value kept as JSON so every request gets a fresh copy

_JSON_OBJECT = re.compile(rb"[ \t\r\n]*\{")
_HEADERS = email.parser.BytesParser(policy=email.policy.HTTP)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A model's filters, sanitised: paths split, `model` dropped, keys sorted."""

    model_name: str
    strip: tuple[Path, ...]
    assign: tuple[Assignment, ...]
    assign_by_id: Mapping[str, tuple[Assignment, ...]]

    @property
    def active(self) -> bool:
        return bool(self.model_name or self.strip or self.assign or self.assign_by_id)

    def rewrites_json(self, requested: str) -> bool:
        return bool(self.model_name or self.strip or self.assign) or requested in self.assign_by_id


class Filtered(Protocol):
    """What has filters: a local model, or a peer's model (whose `use_model_name` is the
    peer's own name for it)."""

    @property
    def filters(self) -> Filters: ...

    @property
    def use_model_name(self) -> str: ...


_plans: dict[int, _Plan] = {}


def rewrite_request(model: Filtered, requested: str, content_type: str, body: bytes) -> bytes:
    """The body to send upstream; the very same object when no filter changes it.

    `requested` is the name the client used (alias or id): it selects `setParamsByID`.
    The caller must fix Content-Length when a new body comes back.
    """
    plan = _plan_for(model)
    if not plan.active or not body:
        return body
    ctype = content_type.lower()
    if ctype.startswith("multipart/form-data"):
        return _rewrite_multipart(content_type, body, plan.model_name) if plan.model_name else body
    if plan.rewrites_json(requested) and ("json" in ctype or _JSON_OBJECT.match(body)):
        return _rewrite_json(plan, requested, body)
    return body


def with_model(content_type: str, body: bytes, name: str) -> bytes:
    """The body with its `model` set to ``name`` (a selector's choice, as llama-swap does)."""
    plan = _Plan(name, (), (), {})
    ctype = content_type.lower()
    if ctype.startswith("multipart/form-data"):
        return _rewrite_multipart(content_type, body, name)
    if "json" in ctype or _JSON_OBJECT.match(body):
        return _rewrite_json(plan, name, body)
    return body


def _plan_for(model: Filtered) -> _Plan:
    """Compile once per config object; the entry dies with the object (configs are never mutated)."""
    plan = _plans.get(id(model))
    if plan is None:
        plan = _plans[id(model)] = _compile(model)
        weakref.finalize(model, _plans.pop, id(model), None)
    return plan


def _compile(model: Filtered) -> _Plan:
    filters = model.filters
    names = {name.strip() for name in filters.strip_params.split(",")}
    strip = tuple(_path(name) for name in sorted(names) if name and not _protected(name))
    by_id = {name: found for name, params in filters.set_params_by_id.items() if (found := _assignments(params))}
    return _Plan(model.use_model_name, strip, _assignments(filters.set_params), by_id)


def _assignments(params: Mapping[str, Any]) -> tuple[Assignment, ...]:
    return tuple((_path(key), orjson.dumps(params[key])) for key in sorted(params) if not _protected(key))


def _path(key: str) -> Path:
    """`a.b.0` addresses nested objects and list items, as sjson paths do in llama-swap."""
    return tuple(key.split("."))


def _protected(key: str) -> bool:
    return _path(key)[0] == PROTECTED_PARAM


def _rewrite_json(plan: _Plan, requested: str, body: bytes) -> bytes:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(document, dict):
        return body
    changed = False
    if plan.model_name and document.get(PROTECTED_PARAM) != plan.model_name:
        document[PROTECTED_PARAM] = plan.model_name
        changed = True
    for path in plan.strip:
        changed |= _delete(document, path)
    for path, value in chain(plan.assign, plan.assign_by_id.get(requested, ())):
        changed |= _assign(document, path, orjson.loads(value))
    if not changed:
        return body
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError as exc:  # parsed (orjson reads 1024 levels) but deeper than it writes (254)
        raise HTTPError(400, f"request body is nested too deeply for this model's filters: {exc}") from None


def _delete(document: dict[str, Any], path: Path) -> bool:
    """Remove the value at `path`; False when there is nothing there."""
    parent = _walk(document, path[:-1], create=False)
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        return True
    if isinstance(parent, list) and (index := _index(path[-1], parent)) is not None:
        del parent[index]
        return True
    return False


def _assign(document: dict[str, Any], path: Path, value: Any) -> bool:
    """Set the value at `path`, creating missing (or replacing scalar) objects on the way."""
    parent = _walk(document, path[:-1], create=True)
    if isinstance(parent, dict):
        parent[path[-1]] = value
        return True
    if isinstance(parent, list) and (index := _index(path[-1], parent)) is not None:
        parent[index] = value
        return True
    return False


def _walk(node: Any, path: Path, create: bool) -> Any:
    """The container at `path`, or None when a list index is out of range (or missing and not creating)."""
    for key in path:
        if isinstance(node, dict):
            child = node.get(key)
            if create and not isinstance(child, (dict, list)):
                child = node[key] = {}
        elif isinstance(node, list) and (index := _index(key, node)) is not None:
            child = node[index]
            if create and not isinstance(child, (dict, list)):
                child = node[index] = {}
        else:
            return None
        node = child
    return node


def _index(key: str, items: list[Any]) -> int | None:
    if key.isascii() and key.isdigit() and int(key) < len(items):
        return int(key)
    return None


def _rewrite_multipart(content_type: str, body: bytes, model_name: str) -> bytes:
    """Replace the first `model` field's value; every other byte, files included, is kept as is.

    Scans with `bytes.find` (file parts are never decoded) and copies the body once. A body
    that does not parse is returned unchanged: the model extractor has already accepted it.
    """
    boundary = _boundary(content_type)
    if boundary is None:
        return body
    delimiter = b"--" + boundary
    pos = body.find(delimiter)
    while pos >= 0 and not body.startswith(b"--", pos + len(delimiter)):  # `--boundary--` ends the body
        line_end = body.find(b"\r\n", pos)
        head_end = body.find(b"\r\n\r\n", line_end)
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if min(line_end, head_end, end) < 0:
            return body
        headers = body[line_end + 2 : head_end + 4]
        if _HEADERS.parsebytes(headers).get_param("name", header="content-disposition") == PROTECTED_PARAM:
            value = model_name.encode()
            if body[head_end + 4 : end] == value:
                return body
            view = memoryview(body)
            return b"".join((view[: head_end + 4], value, view[end:]))
        pos = end + 2
    return body


def _boundary(content_type: str) -> bytes | None:
    """The boundary as the bytes on the wire (aiohttp decodes headers as UTF-8, surrogateescape)."""
    raw = content_type.encode("utf-8", "surrogateescape")
    boundary = _HEADERS.parsebytes(b"Content-Type: " + raw + b"\r\n\r\n").get_boundary()
    return boundary.encode("utf-8", "surrogateescape") if boundary else None
