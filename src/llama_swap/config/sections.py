"""Global sections whose behaviour lives elsewhere (peers, profiles, selectors, store, ...).

They are parsed and checked here, at load, so a wrong value is reported with its key path
before the server starts, and the code acting on them gets typed values.
"""

import os
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from llama_swap.config.fields import (
    Filters,
    HttpUrl,
    NameList,
    NonEmptyText,
    RawMap,
    Section,
    Text,
    Timeouts,
)

DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")
DEFAULT_IGNORE_PATH = r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$"
MIN_PERFORMANCE_EVERY = timedelta(seconds=5)

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"[-+]?(?:{_DURATION_PART.pattern})+")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_LEGACY_PROFILE = (
    "must be a mapping with description and pins; the legacy list syntax is no longer "
    "supported (to run models together, make them members of a group with swap: false "
    "under routing.router.settings.groups)"
)


def _go_duration(value: Any) -> Any:
    """`5s`, `1m30s`, `1.5h`, `0`: Go's time.ParseDuration syntax, as llama-swap reads it."""
    if not isinstance(value, str):
        raise ValueError('must be a duration such as "5s" or "1m30s"')
    if value in ("0", "+0", "-0"):
        return timedelta(0)
    if not _DURATION.fullmatch(value):
        raise ValueError(f'"{value}" is not a duration such as "5s" or "1m30s"')
    seconds = sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(value))
    return timedelta(seconds=-seconds if value.startswith("-") else seconds)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ValueError(f"invalid regular expression: {err}") from None
    return pattern


def _normalise_headers(names: list[str]) -> list[str]:
    """Trimmed, blanks dropped, first spelling kept among case-insensitive duplicates."""
    kept: dict[str, str] = {}
    for name in (name.strip() for name in names):
        if name:
            kept.setdefault(name.lower(), name)
    return list(kept.values())


GoDuration = Annotated[timedelta, BeforeValidator(_go_duration)]
Regex = Annotated[Text, AfterValidator(_check_regex)]


class PeerTimeouts(Timeouts):
    """As for models, but a peer gets 60 s to send response headers, and its idle connections
    are kept for Go's 90 s (a remote server, maybe over TLS, not a local llama-server)."""

    response_header: int = Field(default=60, ge=0)
    idle_conn: int | None = Field(default=90, ge=0)  # Go's default: a peer keeps its connections


class PeerConfig(Section):
    """A remote OpenAI-compatible server; its models are addressed as `<peer>/<model>`."""

    proxy: HttpUrl
    models: NameList
    api_key: Text = ""
    filters: Filters = Field(default_factory=Filters)
    timeouts: PeerTimeouts = Field(default_factory=PeerTimeouts)

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, key: str) -> str:
        """Sent as a header value: printable ASCII without spaces."""
        if key and not (key.isascii() and key.isprintable() and " " not in key):
            raise ValueError("must be printable ASCII without spaces")
        return key


class ProfileConfig(Section):
    """Runtime-switchable rewrites of requested model IDs; an empty target disables the ID."""

    description: Text = ""
    pins: dict[str, Text] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _not_legacy(cls, data: Any) -> Any:
        if isinstance(data, list):
            raise ValueError(_LEGACY_PROFILE)
        return data

    @field_validator("pins", mode="before")
    @classmethod
    def _null_disables(cls, pins: Any) -> Any:
        """`big: ~` disables `big`, the same as `big: ""`."""
        if isinstance(pins, dict):
            return {key: "" if value is None else value for key, value in pins.items()}
        return pins


class SelectorSettings(Section):
    """Strategy knobs; `spillover` is requests per target before the next one starts."""

    spillover: int = Field(default=1, ge=1)


class SelectorConfig(Section):
    """A virtual model ID resolved to one of its targets for each request."""

    strategy: Literal["warm", "pin", "spillover"]
    targets: NameList
    settings: SelectorSettings = Field(default_factory=SelectorSettings)
    name: Text = ""
    description: Text = ""
    unlisted: bool = False
    metadata: RawMap = Field(default_factory=dict)


class StoreConfig(Section):
    """Where the activity log is persisted (SQLite); absent means in memory."""

    path: NonEmptyText

    @field_validator("path")
    @classmethod
    def _writable(cls, path: str) -> str:
        """Checked at load, so a wrong path is a config error rather than a failed start."""
        target = os.path.abspath(os.path.expanduser(path))
        if os.path.isdir(target):
            raise ValueError(f"{path} is a directory; give a file name such as {os.path.join(path, 'activity.db')}")
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise ValueError(f"directory {folder} does not exist")
        if not os.access(folder, os.W_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
            raise ValueError(f"{path} is not writable")
        return path


class PerformanceConfig(Section):
    """The system/GPU sampler; `every` is written as a Go duration (`5s`, `1m`)."""

    disabled: bool = False
    every: GoDuration = MIN_PERFORMANCE_EVERY

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, every: timedelta) -> timedelta:
        if every < MIN_PERFORMANCE_EVERY:
            raise ValueError("must be at least 5s")
        return every


class ActivityConfig(Section):
    """Headers the UI reads a session ID from; `[]` turns the session column off."""

    session_id: Annotated[list[Text], AfterValidator(_normalise_headers)] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_HEADERS), alias="session_id")


class UIConfig(Section):
    """Web UI settings."""

    activity: ActivityConfig = Field(default_factory=ActivityConfig)


class UpstreamConfig(Section):
    """The /upstream passthrough: paths that answer 409 instead of loading a model."""

    ignore_paths: list[Regex] = Field(default_factory=lambda: [DEFAULT_IGNORE_PATH])

    @field_validator("ignore_paths")
    @classmethod
    def _default_when_empty(cls, patterns: list[str]) -> list[str]:
        return patterns or [DEFAULT_IGNORE_PATH]

    @property
    def ignore_patterns(self) -> list[re.Pattern[str]]:
        """`ignore_paths` compiled (the re module caches compiled patterns)."""
        return [re.compile(pattern) for pattern in self.ignore_paths]


class OnStartupConfig(Section):
    """What to do when the server is built (at startup and after every reload)."""

    preload: list[NonEmptyText] = Field(default_factory=list)


class HooksConfig(Section):
    """Event hooks; `on_startup` is the only one."""

    on_startup: OnStartupConfig = Field(default_factory=OnStartupConfig, alias="on_startup")
