"""Read a config file: env macros, YAML 1.2 parsing with line numbers, macros, validation.

Every failure becomes one ConfigError whose message points at the file, line and key path
(`config.yaml:8: models.llama3.ttl: must be an integer`), because a user editing YAML needs
to know where to look, not which Python class complained.
"""

import contextlib
import difflib
import os
from datetime import date
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from llama_swap.config.macros import expand_tree, substitute_env
from llama_swap.config.schema import Config, ConfigError, KeyPath, PathError

MAX_REPORTED_ERRORS = 5
Lines = dict[KeyPath, int]

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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate the config file at `path`."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {source}: {err.strerror}") from None
    return load_config_text(text, source)


def load_config_text(text: str, source: str = "config.yaml") -> Config:
    """Load and validate config YAML given as a string; `source` names it in messages."""
    lines: Lines = {}
    try:
        tree = _parse(substitute_env(text, os.environ), lines)
        expanded, ports = expand_tree(tree)
        return Config.model_validate(expanded, context={"ports": ports, "source": source})
    except PathError as err:
        raise ConfigError(_locate(source, lines, err.path, err.message, err.line)) from None
    except ValidationError as err:
        raise ConfigError(_describe(source, lines, err)) from None


def _parse(text: str, lines: Lines) -> dict[str, Any]:
    """Parse YAML 1.2 (so `no`/`on` stay strings) into plain data, recording key lines."""
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise PathError((), f"invalid YAML: {err.problem}", line=line) from None
    except YAMLError as err:
        raise PathError((), f"invalid YAML: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, CommentedMap):
        raise PathError((), "the config must be a mapping of keys to values", line=1)
    tree: dict[str, Any] = _plain(document, (), lines)
    return tree


def _plain(node: Any, path: KeyPath, lines: Lines) -> Any:
    """Convert ruamel nodes to dict/list/str/int/float/bool/None, noting each key's line."""
    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            name = _key_text(key, path)
            _note_line(lines, (*path, name), node.lc.key, key)
            result[name] = _plain(value, (*path, name), lines)
        return result
    if isinstance(node, CommentedSeq):
        for index in range(len(node)):
            _note_line(lines, (*path, index), node.lc.item, index)
        return [_plain(item, (*path, index), lines) for index, item in enumerate(node)]
    return _plain_scalar(node)


def _plain_scalar(node: Any) -> Any:
    if isinstance(node, TaggedScalar):
        return node.value
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, date):
        return node.isoformat()
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _key_text(key: Any, path: KeyPath) -> str:
    """Map keys are names: `123:` is the model "123"; complex keys are refused."""
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(key)
    raise PathError(path, f"keys must be plain names, not {key!r}")


def _note_line(lines: Lines, path: KeyPath, lookup: Any, key: Any) -> None:
    """Record a key's 1-based line; keys pulled in by `<<:` merges have none."""
    with contextlib.suppress(KeyError):
        lines[path] = lookup(key)[0] + 1


def _describe(source: str, lines: Lines, error: ValidationError) -> str:
    """Turn pydantic errors into short located messages, one per line, in file order."""
    errors = sorted(error.errors(),
                    key=lambda item: _nearest_line(lines, tuple(item["loc"])) or 0)
    messages = [_locate(source, lines, tuple(item["loc"]), _message(item))
                for item in errors[:MAX_REPORTED_ERRORS]]
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
                return field.annotation
        return None
    if get_origin(schema) in (dict, list):
        return get_args(schema)[-1]
    return None


def _locate(source: str, lines: Lines, path: KeyPath, message: str,
            line: int | None = None) -> str:
    """`file:line: dotted.path: message`, with the nearest known line for the path."""
    line = line or _nearest_line(lines, path)
    where = f"{source}:{line}" if line else source
    return f"{where}: {_dotted(path)}: {message}" if path else f"{where}: {message}"


def _nearest_line(lines: Lines, path: KeyPath) -> int | None:
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return None


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
