"""Macros: `${env.X}` on the raw text, then user macros, `${MODEL_ID}` and `${PORT}` on the tree.

Expansion runs on the untyped YAML tree, before typed validation, so a value that is exactly
`${x}` can keep the macro's native type (`port: ${PORT}` in metadata stays an int) and so an
integer field such as `ttl: ${idle}` validates as an integer.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from llama_swap.config.command import strip_comment_lines
from llama_swap.config.fields import KeyPath, PathError, go_int

Scalar = str | int | float | bool
Scope = dict[str, Scalar]

DEFAULT_START_PORT = 5800
MAX_NAME_LENGTH = 63
RESERVED = frozenset({"PORT", "PID", "MODEL_ID"})
PORT_REF = "${PORT}"
DEFAULT_PROXY = "http://localhost:${PORT}"  # a model without `proxy` is reached on its assigned port

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_REF = re.compile(r"\$\{([A-Za-z0-9_-]+)\}")
_LEFTOVER = re.compile(r"\$\{(env\.[A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9_-]+)\}")
_ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
_BLOCK_SCALAR_START = re.compile(r"(?:^|\s)[|>][-+0-9]*$")
_QUOTE_OPENERS = " \t[{,:-'"


# --- ${env.NAME}: plain text substitution before YAML parsing --------------------------


def substitute_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace `${env.NAME}` outside YAML comments; an unset variable is an error.

    Done on the text so it works anywhere, flow lists included. Values are escaped for the
    quoting they land in, and values with line breaks or NUL are refused.
    """
    out: list[str] = []
    block_indent: int | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and (not line.strip() or indent > block_indent):
            out.append(_substitute_env_line(line, number, environ))
            continue
        code, comment = _split_comment(line)
        block_indent = indent if _BLOCK_SCALAR_START.search(code.rstrip()) else None
        out.append(_substitute_env_line(code, number, environ) + comment)
    return "\n".join(out)


def _substitute_env_line(code: str, number: int, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = environ.get(name)
        if value is None:
            message = f"environment variable {name} is not set (used as {match.group(0)})"
            raise PathError((), message, line=number)
        if any(char in value for char in "\n\r\0"):
            raise PathError((), f"environment variable {name} contains a line break or NUL",
                            line=number)
        return _escape(value, _quote_at(code, match.start()))

    return _ENV_REF.sub(replace, code)


def _escape(value: str, quote: str | None) -> str:
    if quote == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"')
    if quote == "'":
        return value.replace("'", "''")
    return value


def _scan(line: str) -> Iterator[tuple[int, str | None]]:
    """Yield each index of a YAML line with the quote open just before it (None if none)."""
    quote: str | None = None
    previous = " "
    escaped = False
    for index, char in enumerate(line):
        yield index, quote
        if quote is None and char in "'\"" and previous in _QUOTE_OPENERS:
            quote = char
        elif quote == '"' and char == "\\" and not escaped:
            escaped = True
            previous = char
            continue
        elif quote == char and not escaped:
            quote = None
        escaped = False
        previous = char


def _split_comment(line: str) -> tuple[str, str]:
    """Split a line into code and `# comment` (a `#` after whitespace, outside quotes)."""
    for index, quote in _scan(line):
        if quote is None and line[index] == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index], line[index:]
    return line, ""


def _quote_at(line: str, position: int) -> str | None:
    return next((quote for index, quote in _scan(line) if index == position), None)


# --- user macros, MODEL_ID and PORT on the parsed tree ---------------------------------


class Expansion(NamedTuple):
    """An expanded tree, the ports given out, and the rule violations found on the way."""

    tree: dict[str, Any]
    ports: dict[str, int]
    problems: list[PathError]
    templates: dict[str, dict[str, Any]]  # a `${PORT}` model as it was before its port was put in


def expand_tree(tree: dict[str, Any], keep_ports: Mapping[str, int] | None = None) -> Expansion:
    """Expand all macros in a parsed config.

    Global macros apply to every value outside `models`; each model sees `MODEL_ID`, the
    globals and its own macros. A broken macro definition is raised at once; a leftover
    `${x}` or a fixed-port model without a proxy is collected, so it can be reported
    alongside the schema errors of the expanded tree.
    """
    declared = _declared(tree.get("macros"), ("macros",))
    scope = _resolve(declared)
    result = {key: value if key in ("macros", "models") else substitute(value, scope)
              for key, value in tree.items()}
    ports: dict[str, int] = {}
    templates: dict[str, dict[str, Any]] = {}
    problems: list[PathError] = []
    models = tree.get("models")
    if isinstance(models, dict):
        expanded = {model_id: _expand_model(model_id, model, declared)
                    for model_id, model in models.items()}
        ports = _assign_ports(expanded, result.get("startPort"), problems, keep_ports or {})
        templates = {model_id: expanded[model_id] for model_id in ports}
        result["models"] = {model_id: put_port(model, ports[model_id]) if model_id in ports else model
                            for model_id, model in expanded.items()}
    reported = {problem.path for problem in problems}
    problems += [leftover for leftover in _leftovers(result, ()) if leftover.path not in reported]
    return Expansion(result, ports, problems, templates)


def put_port(model: dict[str, Any], port: int) -> dict[str, Any]:
    """A model (macros expanded but `${PORT}`) with ``port`` put in for `${PORT}`."""
    return _substitute_model(model, {"PORT": port})


def substitute(value: Any, scope: Scope) -> Any:
    """Replace `${name}` in every string of a value; an exact `${name}` keeps its type."""
    if isinstance(value, str):
        exact = _REF.fullmatch(value)
        if exact and exact.group(1) in scope:
            return scope[exact.group(1)]
        return interpolate(value, scope)
    if isinstance(value, dict):
        return {key: substitute(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, scope) for item in value]
    return value


def interpolate(text: str, scope: Scope) -> str:
    """Replace known `${name}` references in a string, leaving unknown ones in place."""
    return _REF.sub(lambda ref: _as_text(scope[ref.group(1)]) if ref.group(1) in scope
                    else ref.group(0), text)


def _as_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _declared(block: Any, path: KeyPath) -> list[tuple[str, Scalar]]:
    """The macros of a `macros` block in declaration order, after checking each one."""
    if block is None:
        return []
    if not isinstance(block, dict):
        raise PathError(path, "must be a mapping of macro names to values")
    for name, value in block.items():
        _check_macro(name, value, (*path, name))
    return list(block.items())


def _check_macro(name: str, value: Any, path: KeyPath) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise PathError(path, f"macro name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise PathError(path, "macro name may only contain letters, digits, '_' and '-'")
    if name in RESERVED:
        raise PathError(path, f"{name} is a reserved macro name")
    if not isinstance(value, (str, int, float)):
        raise PathError(path, "macro value must be a string, number or boolean")
    if isinstance(value, str) and f"${{{name}}}" in value:
        raise PathError(path, f"macro refers to itself (${{{name}}})")


def _resolve(entries: list[tuple[str, Scalar]]) -> Scope:
    """Expand each macro with the ones declared before it, so forward references stay."""
    scope: Scope = {}
    for name, value in entries:
        scope[name] = substitute(value, scope)
    return scope


def _expand_model(model_id: str, model: Any, globals_: list[tuple[str, Scalar]]) -> Any:
    """Expand one model's values with MODEL_ID, the globals and its own macros."""
    if not isinstance(model, dict):
        return model
    path = ("models", model_id)
    model = dict(model)
    for key in ("cmd", "cmdStop"):
        if isinstance(model.get(key), str):
            model[key] = strip_comment_lines(model[key])
    if model.get("proxy") is None and _has_text(model.get("cmd")):
        model["proxy"] = DEFAULT_PROXY
    merged: dict[str, Scalar] = {"MODEL_ID": model_id, **dict(globals_)}
    merged.update(_declared(model.get("macros"), (*path, "macros")))
    scope = _resolve(list(merged.items()))
    _check_by_id_keys(model, scope, path)
    return _substitute_model(model, scope)


def _check_by_id_keys(model: dict[str, Any], scope: Scope, path: KeyPath) -> None:
    """Two `filters.setParamsByID` keys that expand to the same name are an error (as in
    llama-swap), rather than one of them silently replacing the other."""
    filters = model.get("filters")
    by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
    if not isinstance(by_id, dict):
        return
    seen: dict[str, str] = {}
    for key in by_id:
        name = interpolate(key, scope)
        if name in seen:
            raise PathError((*path, "filters", "setParamsByID", key),
                            f'resolves to "{name}", as does "{seen[name]}"')
        seen[name] = key


def _has_text(cmd: Any) -> bool:
    """Whether cmd is usable; without one the default proxy is moot and validation says why."""
    return isinstance(cmd, str) and bool(cmd.strip())


def _substitute_model(model: dict[str, Any], scope: Scope) -> dict[str, Any]:
    """Substitute in every model value and in `filters.setParamsByID` keys (they are ids)."""
    result = {key: value if key == "macros" else substitute(value, scope)
              for key, value in model.items()}
    filters = result.get("filters")
    if isinstance(filters, dict) and isinstance(filters.get("setParamsByID"), dict):
        by_id = filters["setParamsByID"]
        result["filters"] = {**filters, "setParamsByID": {
            interpolate(key, scope): value for key, value in by_id.items()}}
    return result


def _assign_ports(
    models: dict[str, Any], start: Any, problems: list[PathError], keep: Mapping[str, int]
) -> dict[str, int]:
    """Give each model whose cmd uses `${PORT}` the next port, in sorted model-id order.

    An invalid `startPort` counts from the default; the schema reports the bad value.
    On a reload, ``keep`` holds the ports models already run on: they keep them (from
    `startPort` up), so adding a model does not shift — and restart — all the others,
    and new models never get a port a removed model may still be serving on.
    """
    start = go_int(start)  # `startPort: 9000.0` is 9000, as validation reads it
    first = start if _is_port(start) else DEFAULT_START_PORT
    users = [m for m in sorted(models) if isinstance(models[m], dict) and _uses_port(models[m].get("cmd"))]
    ports = {m: keep[m] for m in users if keep.get(m, -1) >= first}
    taken = set(keep.values())  # a removed model may still be finishing on its port
    candidate = first
    for model_id in users:
        if model_id in ports:
            continue
        while candidate in taken:
            candidate += 1
        ports[model_id] = candidate
        taken.add(candidate)
    for model_id in sorted(models):
        model = models[model_id]
        if isinstance(model, dict) and model_id not in ports and isinstance(model.get("proxy"), str) \
                and PORT_REF in model["proxy"]:
            problems.append(PathError(("models", model_id, "proxy"),
                                      "uses ${PORT} but cmd does not; a model with a fixed "
                                      "port must set proxy to its URL"))
    return ports


def _uses_port(cmd: Any) -> bool:
    return isinstance(cmd, str) and PORT_REF in cmd


def _is_port(start: Any) -> bool:
    return isinstance(start, int) and not isinstance(start, bool) and start >= 1


def _leftovers(value: Any, path: KeyPath) -> Iterator[PathError]:
    """Every `${...}` still present; `${PID}` may only stay in a model's cmdStop."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "macros" and (path == () or (path[:1] == ("models",) and len(path) == 2)):
                continue
            if path[-2:] == ("filters", "setParamsByID"):
                yield from _text_leftovers(key, (*path, key))
            yield from _leftovers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leftovers(item, (*path, index))
    elif isinstance(value, str):
        yield from _text_leftovers(value, path)


def _text_leftovers(text: str, path: KeyPath) -> Iterator[PathError]:
    """The first bad reference in one string (one message per key is enough)."""
    for ref in _LEFTOVER.finditer(text):
        name = ref.group(1)
        if name != "PID":
            yield PathError(path, f"unknown macro ${{{name}}}")
            return
        if not (len(path) == 3 and path[0] == "models" and path[2] == "cmdStop"):
            yield PathError(path, "${PID} is only allowed in cmdStop")
            return
