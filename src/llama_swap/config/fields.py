"""Building blocks shared by every config section: errors, the strict base model, value types.

Values are read as llama-swap's YAML decoder (yaml.v3) reads them into its typed fields, and
no looser: a boolean is `true`/`false` or one of YAML 1.1's words (`yes`, `off`, ...), an
integer may be written `60.0` but not `60.5`, and a quoted "5" is not an integer. A key no
section knows is ignored, as llama-swap ignores it (the loader warns, `load.drop_unknown_keys`),
unless it looks like a typo of a known key (`cmdd`), which is an error naming that key.
"""

import difflib
import functools
import math
from collections.abc import Collection, Sized
from types import UnionType
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

KeyPath = tuple[str | int, ...]
RawMap = dict[str, Any]
_Sized = TypeVar("_Sized", bound=Sized)

# difflib ratio from which an unknown key is a typo of a known one (an error) rather than a
# key llama-swap for Python does not know (ignored): "cmdd"/"cmd" 0.86, "modles"/"models"
# 0.83, "lifo"/"fifo" 0.75 are typos; llama-swap's own `peers.*.tailcatKey` ("apiKey" 0.63)
# and an anchor holder such as `defs:` ("models" 0.6) are not.
TYPO_SIMILARITY = 0.7
UNKNOWN_KEY_IGNORED = "unknown key, ignored (llama-swap for Python does not know it)"
# YAML 1.1 booleans, which yaml.v3 still decodes into a Go bool field (quoted or not)
GO_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
GO_FALSE = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})


class ConfigError(Exception):
    """A config problem the user must fix; the message names file, line and key path."""


class PathError(Exception):
    """A problem at a key path, raised while loading; the loader adds file and line."""

    def __init__(self, path: KeyPath, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line


class PathErrors(Exception):
    """Several rule violations found in one pass, so the user can fix them all at once."""

    def __init__(self, errors: list[PathError]) -> None:
        super().__init__("; ".join(error.message for error in errors))
        self.errors = errors


def dotted(path: KeyPath) -> str:
    """`models.m.env[1]`: how a key path is written in messages."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def near_miss(key: str, known: Collection[str]) -> str | None:
    """The known key `key` is probably a typo of, if any."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=TYPO_SIMILARITY)
    return close[0] if close else None


def unknown_key(key: str, known: Collection[str]) -> str:
    """The message for an unknown key that is kept as an error: ' (did you mean "cmd"?)'
    is added when it is a typo (`near_miss`)."""
    close = near_miss(key, known)
    return "unknown key" + (f' (did you mean "{close}"?)' if close else "")


def go_bool(value: Any) -> Any:
    """`yes`, `off`, ... as the booleans yaml.v3 makes of them; anything else unchanged."""
    if isinstance(value, str):
        if value in GO_TRUE:
            return True
        if value in GO_FALSE:
            return False
    return value


def go_int(value: Any) -> Any:
    """A whole float (`60.0`) as an integer, as yaml.v3 decodes it; anything else unchanged
    (60.5 is then refused, where yaml.v3 would silently make it 60)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


@functools.cache
def _scalar_kind(section: type[BaseModel], field_name: str) -> Any:
    """bool or int for a field typed so (optionally `| None`), else None."""
    annotation = section.model_fields[field_name].annotation
    if get_origin(annotation) in (Union, UnionType):
        options = [option for option in get_args(annotation) if option is not type(None)]
        annotation = options[0] if len(options) == 1 else None
    return annotation if annotation in (bool, int) else None


def _number_as_text(value: Any) -> Any:
    """Let `name: 2024` or an exact numeric `${n}` fill string fields, as YAML users expect."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_not_empty(value: _Sized) -> _Sized:
    if not len(value):
        raise ValueError("must not be empty")
    return value


def _check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return url


Text = Annotated[str, BeforeValidator(_number_as_text)]
NonEmpty = AfterValidator(_check_not_empty)
NonEmptyText = Annotated[Text, NonEmpty]
HttpUrl = Annotated[Text, AfterValidator(_check_http_url)]
NameList = Annotated[list[NonEmptyText], NonEmpty]


class Section(BaseModel):
    """Base for every config mapping: camelCase keys, strict types, no unknown keys.

    The loader has removed the unknown keys it ignores before validation
    (`load.drop_unknown_keys`); those left are typos, reported as errors here.
    """

    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)
    # keys a section accepts beyond its fields' (read by a before-validator)
    other_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def known_keys(cls) -> frozenset[str]:
        """Every key this section accepts, as written in the YAML."""
        return frozenset(field.alias or name for name, field in cls.model_fields.items()) | cls.other_keys

    @field_validator("*", mode="before")
    @classmethod
    def _go_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Every bool and int field reads values as yaml.v3 does (`go_bool`, `go_int`)."""
        kind = _scalar_kind(cls, info.field_name) if info.field_name else None
        if kind is bool:
            return go_bool(value)
        if kind is int:
            return go_int(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """`key:` with no value keeps the default, as in llama-swap."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Timeouts(Section):
    """Upstream connection timeouts in seconds (0 = none); defaults match Go's transport."""

    connect: int = Field(default=30, ge=0)
    keepalive: int = Field(default=30, ge=0)
    response_header: int = Field(default=0, ge=0)
    tls_handshake: int = Field(default=10, ge=0)
    expect_continue: int = Field(default=1, ge=0)
    idle_conn: int | None = Field(default=None, ge=0)  # unset: 4 s, below llama-server's 5 s (wire/upstream.py)


class ClientTimeouts(Section):
    """How long a client may take, in seconds (0 = no limit): this service's own keys.

    `header`: from a request's first byte to the end of its request line and fields;
    `body`: a request body may go this long without a byte while it is awaited;
    `idle`: a kept-alive connection with nothing in progress is closed after this.
    """

    header: float = Field(default=30, ge=0)
    body: float = Field(default=60, ge=0)
    idle: float = Field(default=75, ge=0)


class Filters(Section):
    """Request body rewrites; `strip_params` is the legacy spelling of `stripParams`."""

    other_keys = frozenset({"strip_params"})
    strip_params: Text = ""
    set_params: RawMap = Field(default_factory=dict)
    set_params_by_id: dict[str, RawMap] = Field(default_factory=dict, alias="setParamsByID")

    @model_validator(mode="before")
    @classmethod
    def _legacy_strip_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strip_params" in data:
            data = dict(data)
            legacy = data.pop("strip_params")
            if not data.get("stripParams"):
                data["stripParams"] = legacy
        return data

