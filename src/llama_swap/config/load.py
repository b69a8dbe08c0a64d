"""Load a config: read and merge the sources, expand macros, validate, report every problem.

Every failure becomes one ConfigError whose lines point at the file, line and key path
(`config.yaml:8: models.llama3.ttl: must be an integer`), because a user editing YAML needs
to know where to look, not which Python class complained. Schema errors (wrong types,
unknown keys) come first, then rule violations (macros, ports, name clashes).
"""

import difflib
import os
from collections.abc import Mapping
from functools import partial
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from llama_swap.config.fields import ConfigError, KeyPath, PathError, PathErrors
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
TOP_LEVEL_KEYS = frozenset(field.alias or name for name, field in Config.model_fields.items())

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
    for source in sources:
        part_lines: Lines = {}
        part = parse_source(read_source(source), source, part_lines, TOP_LEVEL_KEYS)
        merge_source(tree, lines, part, part_lines, source)
    origin = os.fspath(path if path is not None else config_dir or "")
    return _build(tree, lines, sources, origin, keep_ports)


def load_config_text(text: str, source: str = "config.yaml", keep_ports: Mapping[str, int] | None = None) -> Config:
    """Load and validate config YAML given as a string; `source` names it in messages."""
    lines: Lines = {}
    return _build(parse_source(text, source, lines, TOP_LEVEL_KEYS), lines, [source], source, keep_ports)


def _build(
    tree: dict[str, Any], lines: Lines, sources: list[str], origin: str, keep_ports: Mapping[str, int] | None
) -> Config:
    """Expand and validate the merged tree; raise one ConfigError listing what is wrong."""
    where = partial(locate, lines, source=origin)
    try:
        expansion = expand_tree(tree, keep_ports)
    except PathError as err:
        raise ConfigError(where(err.path, err.message)) from None
    context = {"ports": expansion.ports, "port_templates": expansion.templates, "source": origin, "sources": sources,
               "locate": where}
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
        return "unknown key" + _suggestion(tuple(error["loc"]))
    if kind == "greater_than_equal":
        return f"must be >= {context['ge']}"
    if kind == "literal_error":
        return f"must be one of {context['expected']}"
    if kind == "value_error":
        return str(context["error"])
    return str(error["msg"])


def _suggestion(loc: KeyPath) -> str:
    """' (did you mean "cmd"?)' for a likely typo of a known key, else ''."""
    schema: Any = Config
    for part in loc[:-1]:
        schema = _child_schema(schema, part)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return ""
    known = [field.alias or name for name, field in schema.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


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
