"""Load a config: read and merge the sources, expand macros, validate, report every problem.

Every failure becomes one ConfigError whose lines point at the file, line and key path
(`config.yaml:8: models.llama3.ttl: must be an integer`), because a user editing YAML needs
to know where to look, not which Python class complained. Schema errors (wrong types,
misspelt keys) come first, then rule violations (macros, ports, name clashes). Keys no
section knows are dropped from each file before anything else, with a warning
(`drop_unknown_keys`), as llama-swap ignores them.
"""

import os
from collections.abc import Mapping
from functools import partial
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from llama_swap.config.fields import (
    UNKNOWN_KEY_IGNORED,
    ConfigError,
    KeyPath,
    PathError,
    PathErrors,
    Section,
    near_miss,
    unknown_key,
)
from llama_swap.config.macros import expand_tree
from llama_swap.config.schema import Config, Locate
from llama_swap.config.sources import (
    Lines,
    locate,
    merge_source,
    nearest,
    parse_source,
    read_source,
    source_files,
)

MAX_REPORTED_ERRORS = 5

_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "missing": "is required",
}


def load_config(path: str | os.PathLike[str] | None = None, *,
                config_dir: str | os.PathLike[str] | None = None,
                keep_ports: Mapping[str, int] | None = None) -> Config:
    """Load the `-config` file and/or the `-config-dir` files (merged in name order).

    ``keep_ports`` (on reload: model id → the port it runs on) keeps running models on
    their ports; see `macros.expand_tree`.
    """
    sources = source_files(path, config_dir)
    tree: dict[str, Any] = {}
    lines: Lines = {}
    ignored: list[str] = []
    for source in sources:
        part_lines: Lines = {}
        part = parse_source(read_source(source), source, part_lines)
        ignored += _ignore_unknown_keys(part, part_lines, source)
        merge_source(tree, lines, part, part_lines, source)
    origin = os.fspath(path if path is not None else config_dir or "")
    return _build(tree, lines, sources, origin, keep_ports, ignored)


def load_config_text(text: str, source: str = "config.yaml", keep_ports: Mapping[str, int] | None = None) -> Config:
    """Load and validate config YAML given as a string; `source` names it in messages."""
    lines: Lines = {}
    tree = parse_source(text, source, lines)
    ignored = _ignore_unknown_keys(tree, lines, source)
    return _build(tree, lines, [source], source, keep_ports, ignored)


def drop_unknown_keys(node: Any, schema: Any = Config, path: KeyPath = ()) -> list[KeyPath]:
    """Remove from a parsed file the keys no section knows and return their paths.

    llama-swap ignores keys it does not know, at every level, so a config written for it
    (or for a newer release, or holding YAML anchors under a key of its own such as
    `defs:`) must load. A key that looks like a typo of a known key at its level (`cmdd`,
    `near_miss`) is kept, for validation to report with its suggestion. Done on each file
    before macros are expanded: an ignored key is not expanded either. The `routing`,
    `groups` and `matrix` mappings are read by `routing.parse_routing`, which does the same.
    """
    dropped: list[KeyPath] = []
    if isinstance(schema, type) and issubclass(schema, Section):
        if isinstance(node, dict):
            known = schema.known_keys()
            for key in list(node):
                if key in known:
                    dropped += drop_unknown_keys(node[key], _child_schema(schema, key), (*path, key))
                elif near_miss(key, known) is None:
                    del node[key]
                    dropped.append((*path, key))
    elif get_origin(schema) is dict and isinstance(node, dict):
        for key, value in node.items():
            dropped += drop_unknown_keys(value, get_args(schema)[-1], (*path, key))
    elif get_origin(schema) is list and isinstance(node, list):
        for index, item in enumerate(node):
            dropped += drop_unknown_keys(item, get_args(schema)[-1], (*path, index))
    return dropped


def _ignore_unknown_keys(tree: dict[str, Any], lines: Lines, source: str) -> list[str]:
    """`drop_unknown_keys` on one file, each key dropped as a located warning."""
    return [locate(lines, path, UNKNOWN_KEY_IGNORED, source) for path in drop_unknown_keys(tree)]


def _build(
    tree: dict[str, Any], lines: Lines, sources: list[str], origin: str, keep_ports: Mapping[str, int] | None,
    ignored: list[str],
) -> Config:
    """Expand and validate the merged tree; raise one ConfigError listing what is wrong.

    ``ignored``: the warnings for the unknown keys dropped from the files, for `Config.warnings`.
    """
    where = partial(locate, lines, source=origin)
    try:
        expansion = expand_tree(tree, keep_ports)
    except PathError as err:
        raise ConfigError(where(err.path, err.message)) from None
    context = {"ports": expansion.ports, "port_templates": expansion.templates, "source": origin, "sources": sources,
               "locate": where, "ignored": ignored}
    schema_errors: list[PathError] = []
    rule_errors = list(expansion.problems)
    try:
        config = Config.model_validate(expansion.tree, context=context)
    except ValidationError as err:
        schema_errors = [PathError(tuple(item["loc"]), _message(item)) for item in err.errors()]
    except PathErrors as err:
        rule_errors += err.errors
    else:
        if not rule_errors:
            return config
    in_file_order = partial(_file_order, lines, {source: rank for rank, source in enumerate(sources)})
    errors = sorted(schema_errors, key=in_file_order) + sorted(rule_errors, key=in_file_order)
    raise ConfigError(_describe(errors, where))


def _file_order(lines: Lines, ranks: dict[str, int], error: PathError) -> tuple[int, int]:
    found = nearest(lines, error.path)
    return (ranks.get(found.source, 0), found.line) if found else (-1, 0)


def _describe(errors: list[PathError], where: Locate) -> str:
    """One located message per line, capped so a broken file does not flood the terminal."""
    messages = [where(error.path, error.message) for error in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        messages.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "\n".join(messages)


def _message(error: Any) -> str:
    kind = error["type"]
    context = error.get("ctx", {})
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "extra_forbidden":
        return _unknown_key(tuple(error["loc"]))
    if kind == "greater_than_equal":
        return f"must be >= {context['ge']}"
    if kind == "literal_error":
        return f"must be one of {context['expected']}"
    if kind == "value_error":
        return str(context["error"])
    return str(error["msg"])


def _unknown_key(loc: KeyPath) -> str:
    """'unknown key (did you mean "cmd"?)': a key `drop_unknown_keys` kept as a typo."""
    schema: Any = Config
    for part in loc[:-1]:
        schema = _child_schema(schema, part)
    known = schema.known_keys() if isinstance(schema, type) and issubclass(schema, Section) else ()
    return unknown_key(str(loc[-1]), known)


def _child_schema(schema: Any, part: str | int) -> Any:
    """The type found one key below `schema` (a model field, or a dict/list item)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        for name, field in schema.model_fields.items():
            if (field.alias or name) == part:
                return _without_none(field.annotation)
        return None
    if get_origin(schema) in (dict, list):
        return get_args(schema)[-1]
    return None


def _without_none(annotation: Any) -> Any:
    """`StoreConfig | None` -> StoreConfig: an optional section has the section's keys."""
    if get_origin(annotation) not in (Union, UnionType):
        return annotation
    options = [option for option in get_args(annotation) if option is not type(None)]
    return options[0] if len(options) == 1 else annotation
