"""Config sources: a `-config` file and/or the YAML files of a `-config-dir`, merged into one tree.

Each file gets its own `${env.X}` pass and YAML 1.2 parse, and every key remembers the file
and line it came from, so a message about the merged tree still points into the right file.
Merging follows llama-swap: mappings merge, lists concatenate, a null yields, and anything
else that differs is a conflict; an entity (a model, peer, profile...) lives in one file.
"""

import contextlib
import os
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from llama_swap.config.fields import ConfigError, KeyPath, PathError, dotted
from llama_swap.config.macros import substitute_env

IDENTITY_MAPS = frozenset({
    ("models",), ("groups",), ("profiles",), ("selectors",), ("peers",), ("matrix",),
    ("routing", "router", "settings", "groups"), ("routing", "router", "settings", "matrix"),
})
YAML_SUFFIXES = (".yml", ".yaml")


class Location(NamedTuple):
    """Where a key was written."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


Lines = dict[KeyPath, Location]


def source_files(path: str | os.PathLike[str] | None,
                 config_dir: str | os.PathLike[str] | None) -> list[str]:
    """The `-config` file, then the top-level *.yml/*.yaml of `-config-dir` sorted by name."""
    if path is None and config_dir is None:
        raise ConfigError("at least one of -config or -config-dir must be given")
    files = [os.fspath(path)] if path is not None else []
    if config_dir is not None:
        directory = os.fspath(config_dir)
        found = _directory_files(directory, files)
        if not found and not files:
            raise ConfigError(f"-config-dir {directory}: no *.yml or *.yaml files")
        files += found
    return files


def _directory_files(directory: str, config_files: list[str]) -> list[str]:
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError as err:
        raise ConfigError(f"-config-dir {directory}: {err.strerror}") from None
    found = [str(entry) for entry in entries
             if entry.suffix in YAML_SUFFIXES and not entry.is_dir()]
    for config_file in config_files:
        if any(Path(config_file).resolve() == Path(file).resolve() for file in found):
            raise ConfigError(f"-config file {config_file} is also in -config-dir {directory}; "
                              "remove it from one")
    return found


def read_source(source: str) -> str:
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {source}: {err.strerror}") from None


def parse_source(text: str, source: str, lines: Lines) -> dict[str, Any]:
    """Env macros, then YAML 1.2 (so `no`/`on` stay strings) into plain data and key lines."""
    try:
        return _parse(substitute_env(text, os.environ), source, lines)
    except PathError as err:
        where = Location(source, err.line) if err.line else None
        raise ConfigError(locate(lines, err.path, err.message, source, where)) from None


def _parse(text: str, source: str, lines: Lines) -> dict[str, Any]:
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
    tree: dict[str, Any] = _plain(document, (), _LineNotes(source, lines))
    return tree


class _LineNotes(NamedTuple):
    source: str
    lines: Lines

    def note(self, path: KeyPath, lookup: Any, key: Any) -> None:
        """Record a key's 1-based line; keys pulled in by `<<:` merges have none (ruamel
        raises KeyError for some and answers None for those merged from a `<<: [*a]` list)."""
        with contextlib.suppress(KeyError):
            position = lookup(key)
            if position is not None:
                self.lines[path] = Location(self.source, position[0] + 1)


def _plain(node: Any, path: KeyPath, notes: _LineNotes) -> Any:
    """Convert ruamel nodes to dict/list/str/int/float/bool/None, noting each key's line."""
    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            name = _key_text(key, path)
            notes.note((*path, name), node.lc.key, key)
            result[name] = _plain(value, (*path, name), notes)
        return result
    if isinstance(node, CommentedSeq):
        for index in range(len(node)):
            notes.note((*path, index), node.lc.item, index)
        return [_plain(item, (*path, index), notes) for index, item in enumerate(node)]
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


def merge_source(tree: dict[str, Any], lines: Lines, part: dict[str, Any], part_lines: Lines,
                 source: str) -> None:
    """Merge one parsed file into the tree so far; `lines` learns where the new keys are."""
    shifts: dict[KeyPath, int] = {}
    try:
        _merge_map(tree, part, (), _Merge(lines, shifts))
    except PathError as err:
        raise ConfigError(locate(part_lines, err.path, err.message, source)) from None
    for path, where in part_lines.items():
        lines.setdefault(_shifted(path, shifts), where)


class _Merge(NamedTuple):
    lines: Lines
    shifts: dict[KeyPath, int]

    def earlier(self, path: KeyPath) -> str:
        """Where the tree so far defines `path`, for a conflict message."""
        where = nearest(self.lines, path)
        return str(where) if where else "an earlier file"


def _merge_map(into: dict[str, Any], part: dict[str, Any], path: KeyPath, merge: _Merge) -> None:
    for key, value in part.items():
        child = (*path, key)
        if key not in into:
            into[key] = value
        elif child in IDENTITY_MAPS:
            into[key] = _merge_entities(into[key], value, child, merge)
        else:
            into[key] = _merge_value(into[key], value, child, merge)


def _merge_entities(into: Any, part: Any, path: KeyPath, merge: _Merge) -> Any:
    """Entity maps (models, peers, ...) only gain entries: one entity, one file."""
    if into is None or part is None:
        return part if into is None else into
    if not (isinstance(into, dict) and isinstance(part, dict)):
        return _merge_value(into, part, path, merge)
    for key, value in part.items():
        if key in into:
            raise PathError((*path, key), f"duplicate {dotted(path)} entry, already defined "
                                          f"at {merge.earlier((*path, key))}")
        into[key] = value
    return into


def _merge_value(into: Any, part: Any, path: KeyPath, merge: _Merge) -> Any:
    """Mappings merge, lists concatenate, null yields; a different scalar is a conflict."""
    if isinstance(into, dict) and isinstance(part, dict):
        _merge_map(into, part, path, merge)
        return into
    if isinstance(into, list) and isinstance(part, list):
        merge.shifts[path] = len(into)
        return [*into, *part]
    if into is None or part is None:
        return part if into is None else into
    if _kind(into) != _kind(part):
        raise PathError(path, f"is a {_kind(part)} here but a {_kind(into)} at {merge.earlier(path)}")
    if type(into) is not type(part) or into != part:
        raise PathError(path, f"{part!r} conflicts with {into!r} set at {merge.earlier(path)}")
    return into


def _kind(value: Any) -> str:
    return "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) else "value"


def _shifted(path: KeyPath, shifts: dict[KeyPath, int]) -> KeyPath:
    """A file's own key path, renumbered where its list was appended to an earlier one."""
    for index, part in enumerate(path):
        if isinstance(part, int):
            return (*path[:index], part + shifts.get(path[:index], 0), *path[index + 1:])
    return path


def nearest(lines: Lines, path: KeyPath) -> Location | None:
    """The line of `path`, or of its closest ancestor that has one."""
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return None


def locate(lines: Lines, path: KeyPath, message: str, source: str,
           where: Location | None = None) -> str:
    """`file:line: dotted.path: message`, with the nearest known line for the path."""
    where = where or nearest(lines, path)
    prefix = str(where) if where else source
    return f"{prefix}: {dotted(path)}: {message}" if path else f"{prefix}: {message}"
