"""Building blocks shared by every config section: errors, the strict base model, value types.

Validation is strict (a quoted "5" is not an integer, `yes` is not a boolean) and unknown
keys are rejected so typos surface at load time instead of being silently ignored.
"""

from collections.abc import Sized
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

KeyPath = tuple[str | int, ...]
RawMap = dict[str, Any]
_Sized = TypeVar("_Sized", bound=Sized)


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
    """Base for every config mapping: camelCase keys, strict types, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)

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

