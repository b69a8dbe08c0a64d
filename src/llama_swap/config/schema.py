"""Typed configuration: llama-swap's camelCase keys, their defaults and per-field rules.

Validation is strict (a quoted "5" is not an integer, `yes` is not a boolean) and unknown
keys are rejected so typos surface at load time instead of being silently ignored.
Cross-model rules (aliases, TTL inheritance) run once all models are valid.
"""

import re
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llama_swap.config.command import split_command

DEFAULT_PROXY = "http://localhost:${PORT}"
DEFAULT_CONCURRENCY_LIMIT = 10
DEFAULT_UNLOAD_TIMEOUT = 10
MIN_HEALTH_CHECK_TIMEOUT = 15
COMFYUI_MODEL_ID = "comfyui_auto"
COMFYUI_MIN_CONCURRENCY = 50

LOG_LEVELS = frozenset({"debug", "info", "warn", "error"})
LOG_TIME_FORMATS = frozenset({
    "ansic", "unixdate", "rubydate", "rfc822", "rfc822z", "rfc850", "rfc1123", "rfc1123z",
    "rfc3339", "rfc3339nano", "kitchen", "stamp", "stampmilli", "stampmicro", "stampnano",
})
_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")

KeyPath = tuple[str | int, ...]


class ConfigError(Exception):
    """A config problem the user must fix; the message names file, line and key path."""


class PathError(Exception):
    """A problem at a key path, raised while loading; the loader adds file and line."""

    def __init__(self, path: KeyPath, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line


def _number_as_text(value: Any) -> Any:
    """Let `name: 2024` or an exact numeric `${n}` fill string fields, as YAML users expect."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_not_empty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _check_env_entry(entry: str) -> str:
    if not _ENV_ENTRY.match(entry):
        raise ValueError("must look like NAME=value")
    return entry


def _check_api_key(key: str) -> str:
    if " " in key:
        raise ValueError("must not contain spaces")
    return key


Text = Annotated[str, BeforeValidator(_number_as_text)]
NonEmptyText = Annotated[Text, AfterValidator(_check_not_empty)]
EnvEntry = Annotated[Text, AfterValidator(_check_env_entry)]
ApiKey = Annotated[NonEmptyText, AfterValidator(_check_api_key)]
Modality = Literal["text", "audio", "image"]
RawMap = dict[str, Any]


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
    idle_conn: int = Field(default=90, ge=0)


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


class Compat(Section):
    """Protocol compatibility switches."""

    ignore_websockets: bool = False


class Capabilities(Section):
    """What the model accepts and produces, advertised in /v1/models."""

    inputs: list[Modality] = Field(default_factory=list, alias="in")
    outputs: list[Modality] = Field(default_factory=list, alias="out")
    tools: bool = False
    reranker: bool = False
    context: int = Field(default=0, ge=0)


class ModelConfig(Section):
    """One `models.<id>` entry, with macros already expanded by the loader."""

    cmd: Text
    cmd_stop: Text = ""
    proxy: Text = DEFAULT_PROXY
    env: list[EnvEntry] = Field(default_factory=list)
    check_endpoint: Text = "/health"
    ttl: int = Field(default=-1, ge=-1)
    unload_timeout: int = Field(default=0, ge=0)
    aliases: list[NonEmptyText] = Field(default_factory=list)
    unlisted: bool = False
    use_model_name: Text = ""
    name: Text = ""
    description: Text = ""
    concurrency_limit: int = Field(default=0, ge=0)
    send_loading_state: bool | None = None
    macros: RawMap = Field(default_factory=dict)
    metadata: RawMap = Field(default_factory=dict)
    filters: Filters = Field(default_factory=Filters)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    compat: Compat = Field(default_factory=Compat)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    health_check_timeout: int = 0

    _id: str = PrivateAttr(default="")
    _port: int | None = PrivateAttr(default=None)

    @field_validator("cmd")
    @classmethod
    def _cmd_splits(cls, cmd: str) -> str:
        if not _split(cmd):
            raise ValueError("is required (empty command)")
        return cmd

    @field_validator("cmd_stop")
    @classmethod
    def _cmd_stop_splits(cls, cmd_stop: str) -> str:
        _split(cmd_stop)
        return cmd_stop

    @field_validator("proxy")
    @classmethod
    def _proxy_is_url(cls, proxy: str) -> str:
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return proxy

    @field_validator("check_endpoint")
    @classmethod
    def _endpoint_is_path(cls, endpoint: str) -> str:
        if endpoint != "none" and not endpoint.startswith("/"):
            raise ValueError('must start with "/" or be "none"')
        return endpoint

    @property
    def id(self) -> str:
        """The key under `models`."""
        return self._id

    @property
    def port(self) -> int | None:
        """The port assigned through `${PORT}`, or None for a fixed-port model."""
        return self._port

    @property
    def argv(self) -> list[str]:
        """`cmd` split into arguments (never run through a shell)."""
        return split_command(self.cmd)

    @property
    def stop_argv(self) -> list[str]:
        """`cmdStop` split into arguments; `${PID}` is left for the caller; [] if unset."""
        return split_command(self.cmd_stop)

    @property
    def env_map(self) -> dict[str, str]:
        """`env` as a mapping; later entries win."""
        return dict(entry.split("=", 1) for entry in self.env)

    @property
    def check_url(self) -> str | None:
        """Health check URL, or None when health checking is disabled."""
        if self.check_endpoint == "none":
            return None
        return self.proxy.rstrip("/") + self.check_endpoint

    def _settle(self, model_id: str, port: int | None, config: "Config") -> None:
        """Fill identity and inherit global settings (`-1`/`0`/unset mean "use global")."""
        self._id = model_id
        self._port = port
        if self.ttl == -1:
            self.ttl = config.global_ttl
        if self.unload_timeout == 0:
            self.unload_timeout = config.unload_timeout
        if self.concurrency_limit == 0:
            self.concurrency_limit = DEFAULT_CONCURRENCY_LIMIT
        if self.send_loading_state is None:
            self.send_loading_state = config.send_loading_state
        self.health_check_timeout = config.health_check_timeout
        if model_id == COMFYUI_MODEL_ID:
            self.compat.ignore_websockets = True
            self.concurrency_limit = max(self.concurrency_limit, COMFYUI_MIN_CONCURRENCY)


def _split(command: str) -> list[str]:
    try:
        return split_command(command)
    except ValueError as err:
        raise ValueError(f"cannot be split into arguments: {err}") from None


class Config(Section):
    """The whole config file. Keys owned by later features are kept as plain mappings."""

    health_check_timeout: int = 120
    log_level: str = "info"
    log_time_format: str = ""
    log_to_stdout: Literal["proxy", "upstream", "both", "none"] = "proxy"
    log_requests: bool = False
    metrics_max_in_memory: int = 1000
    capture_buffer: int = Field(default=5, ge=0)
    start_port: int = Field(default=5800, ge=1)
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    global_ttl: int = Field(default=0, ge=0, alias="globalTTL")
    unload_timeout: int = Field(default=DEFAULT_UNLOAD_TIMEOUT, ge=0)
    macros: RawMap = Field(default_factory=dict)
    api_keys: list[ApiKey] = Field(default_factory=list)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    store: RawMap | None = None
    ui: RawMap = Field(default_factory=dict)
    performance: RawMap = Field(default_factory=dict)
    upstream: RawMap = Field(default_factory=dict)
    profiles: RawMap = Field(default_factory=dict)
    selectors: RawMap = Field(default_factory=dict)
    hooks: RawMap = Field(default_factory=dict)
    routing: RawMap = Field(default_factory=dict)
    groups: RawMap = Field(default_factory=dict)
    matrix: RawMap | None = None
    peers: RawMap = Field(default_factory=dict)

    _aliases: dict[str, str] = PrivateAttr(default_factory=dict)
    _source_path: str = PrivateAttr(default="")

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, level: Any) -> Any:
        if isinstance(level, str):
            return level.lower() if level.lower() in LOG_LEVELS else "info"
        return level

    @field_validator("log_time_format", mode="before")
    @classmethod
    def _known_time_format(cls, name: Any) -> Any:
        if isinstance(name, str):
            return name.lower() if name.lower() in LOG_TIME_FORMATS else ""
        return name

    @field_validator("health_check_timeout")
    @classmethod
    def _health_floor(cls, seconds: int) -> int:
        return max(seconds, MIN_HEALTH_CHECK_TIMEOUT)

    @field_validator("metrics_max_in_memory")
    @classmethod
    def _metrics_default(cls, rows: int) -> int:
        return rows if rows > 0 else 1000

    @field_validator("unload_timeout")
    @classmethod
    def _unload_default(cls, seconds: int) -> int:
        return seconds or DEFAULT_UNLOAD_TIMEOUT

    @model_validator(mode="after")
    def _settle_models(self, info: ValidationInfo) -> Self:
        """Bind ids and ports (from the loader's context), inherit globals, index aliases."""
        context = info.context or {}
        self._source_path = context.get("source", "")
        ports = context.get("ports", {})
        for model_id, model in self.models.items():
            model._settle(model_id, ports.get(model_id), self)
        self._aliases = _index_aliases(self.models)
        return self

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> model id, including `filters.setParamsByID` keys."""
        return self._aliases

    @property
    def source_path(self) -> str:
        """Where the config came from, for messages."""
        return self._source_path

    def model_for(self, name: str) -> ModelConfig | None:
        """The model a request names, by id or alias."""
        model_id = name if name in self.models else self._aliases.get(name)
        return self.models.get(model_id) if model_id is not None else None


def _index_aliases(models: dict[str, ModelConfig]) -> dict[str, str]:
    """Map every alias to its model; aliases must be unique and differ from model ids.

    Keys of `filters.setParamsByID` (other than the model's own id) become aliases too.
    """
    aliases: dict[str, str] = {}
    for model_id, model in models.items():
        for index, alias in enumerate(model.aliases):
            _claim(aliases, models, alias, model_id, ("models", model_id, "aliases", index))
        for key in model.filters.set_params_by_id:
            if key == model_id or aliases.get(key) == model_id:
                continue
            path = ("models", model_id, "filters", "setParamsByID", key)
            _claim(aliases, models, key, model_id, path)
            model.aliases.append(key)
    return aliases


def _claim(
    aliases: dict[str, str], models: dict[str, ModelConfig], alias: str, model_id: str,
    path: KeyPath,
) -> None:
    if alias in models:
        raise PathError(path, f'alias "{alias}" is already a model id')
    if alias in aliases:
        raise PathError(path, f'duplicate alias "{alias}" (already used by model {aliases[alias]})')
    aliases[alias] = model_id
