"""The whole config file: global keys, their defaults, and the rules that span sections.

Per-model keys live in `model`, the sections acted on elsewhere in `sections`; cross-section
rules (one namespace for model ids, aliases, peer models and selectors; TTL and timeout
inheritance; preload resolution) run here once every section is individually valid.
"""

from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from llama_swap.config.fields import (
    UNKNOWN_KEY_IGNORED,
    ClientTimeouts,
    KeyPath,
    NonEmptyText,
    PathError,
    PathErrors,
    RawMap,
    Section,
    Text,
    dotted,
)
from llama_swap.config.model import ModelConfig
from llama_swap.config.names import (
    Namespace,
    check_pins,
    claim_aliases,
    claim_peer_models,
    claim_selectors,
    resolve_preload,
    spillover_problems,
)
from llama_swap.config.routing import RoutingError, RoutingSpec, parse_routing
from llama_swap.config.sections import (
    ActivityConfig,
    HooksConfig,
    PeerConfig,
    PerformanceConfig,
    ProfileConfig,
    SelectorConfig,
    StoreConfig,
    UIConfig,
    UpstreamConfig,
)
from llama_swap.redact import is_sensitive_header

DEFAULT_UNLOAD_TIMEOUT = 10
DEFAULT_MAX_BODY_MB = 1024  # images and audio are large; aiohttp's own 1 MiB would refuse them
DEFAULT_MAX_HEADER_KB = 64  # request line and fields: browsers' cookies fit, a flood does not
MIN_HEALTH_CHECK_TIMEOUT = 15
DEFAULT_WARM_SWAP_MAX_MB = 20480  # saved KV caches on disk, all models together
DEFAULT_WARM_SWAP_TIMEOUT = 10.0  # seconds a save may delay a stop, or a restore a start

LOG_LEVELS = frozenset({"debug", "info", "warn", "error"})
LOG_TIME_FORMATS = frozenset({
    "ansic", "unixdate", "rubydate", "rfc822", "rfc822z", "rfc850", "rfc1123", "rfc1123z",
    "rfc3339", "rfc3339nano", "kitchen", "stamp", "stampmilli", "stampmicro", "stampnano",
})

Locate = Callable[[KeyPath, str], str]


def _check_api_key(key: str) -> str:
    if " " in key:
        raise ValueError("must not contain spaces")
    return key


def _unlocated(path: KeyPath, message: str) -> str:
    return f"{dotted(path)}: {message}"


ApiKey = Annotated[NonEmptyText, AfterValidator(_check_api_key)]


def _hide_credential_headers(activity: ActivityConfig, locate: Locate) -> list[str]:
    """Drop `Authorization`, `Cookie`, `x-api-key`... from the session-id headers: the
    in-flight list (UI, /api/inflight) would show their values to anyone who can read it."""
    notes = [
        locate(("ui", "activity", "session_id", index), f"{name} holds credentials; it is never shown as a session id")
        for index, name in enumerate(activity.session_id)
        if is_sensitive_header(name)
    ]
    if notes:
        activity.session_id = [name for name in activity.session_id if not is_sensitive_header(name)]
    return notes


class Config(Section):
    """The whole config. Routing keys (`routing`, `groups`, `matrix`) stay plain mappings."""

    health_check_timeout: int = 120
    health_check_interval: float = Field(default=10, ge=0)  # ready models are re-checked; 0 = never
    log_level: str = "info"
    log_time_format: str = ""
    log_to_stdout: Literal["proxy", "upstream", "both", "none"] = "proxy"
    log_requests: bool = False
    metrics_max_in_memory: int = 1000
    error_format: Literal["simple", "openai"] = "simple"  # this service's key: the shape of its own errors
    # this service's keys: llama-server KV caches saved before a stop, restored after a start (warm/)
    warm_swap: bool = False
    warm_swap_dir: Text = ""  # "" = the user's cache directory (warm/files.py default_dir)
    warm_swap_max_mb: int = Field(default=DEFAULT_WARM_SWAP_MAX_MB, ge=1, alias="warmSwapMaxMB")
    warm_swap_timeout: float = Field(default=DEFAULT_WARM_SWAP_TIMEOUT, gt=0)
    capture_buffer: int = Field(default=0, ge=0)  # Go: 5; off here, see docs/performance.md (captures)
    start_port: int = Field(default=5800, ge=1)
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    global_ttl: int = Field(default=0, ge=0, alias="globalTTL")
    unload_timeout: int = Field(default=DEFAULT_UNLOAD_TIMEOUT, ge=0)
    macros: RawMap = Field(default_factory=dict)
    api_keys: list[ApiKey] = Field(default_factory=list)
    forward_api_keys: bool = False
    max_body_mb: int = Field(default=DEFAULT_MAX_BODY_MB, ge=1, alias="maxBodyMB")
    max_header_kb: int = Field(default=DEFAULT_MAX_HEADER_KB, ge=8, le=1024, alias="maxHeaderKB")
    client_timeouts: ClientTimeouts = Field(default_factory=ClientTimeouts)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    store: StoreConfig | None = None
    ui: UIConfig = Field(default_factory=UIConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    selectors: dict[str, SelectorConfig] = Field(default_factory=dict)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    routing: RawMap = Field(default_factory=dict)
    groups: RawMap = Field(default_factory=dict)
    matrix: RawMap | None = None
    peers: dict[str, PeerConfig] = Field(default_factory=dict)

    _aliases: dict[str, str] = PrivateAttr(default_factory=dict)
    _preload: list[str] = PrivateAttr(default_factory=list)
    _routing: RoutingSpec | None = PrivateAttr(default=None)
    _warnings: list[str] = PrivateAttr(default_factory=list)
    _source_path: str = PrivateAttr(default="")
    _sources: list[str] = PrivateAttr(default_factory=list)

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
    def _settle(self, info: ValidationInfo) -> Self:
        """Bind ids and ports (from the loader's context), inherit globals, check names.

        The loader's context also says where the config came from, how to point at a key
        path in a message (`locate`), used for warnings, and which unknown keys it dropped
        (`ignored`, warnings already located).
        """
        context = info.context or {}
        self._source_path = context.get("source", "")
        self._sources = list(context.get("sources", [self._source_path]))
        ports = context.get("ports", {})
        templates = context.get("port_templates", {})
        for model_id, model in self.models.items():
            model._settle(model_id, ports.get(model_id), templates.get(model_id), self)
        names = Namespace(self.models)
        self._aliases = claim_aliases(names, self.models)
        claim_peer_models(names, self.peers)
        claim_selectors(names, self.selectors)
        check_pins(names, self.profiles)
        if names.problems:
            raise PathErrors(names.problems)
        try:
            self._routing = parse_routing(
                groups=self.groups, matrix=self.matrix, routing=self.routing,
                model_ids=self.models.keys(), aliases=self._aliases,
            )
        except RoutingError as exc:
            raise PathErrors([PathError(exc.keys, exc.message)]) from exc
        from llama_swap.routing.policy import build_policy  # here: routing reads this package's routing specs

        def local_id(name: str) -> str | None:
            model = self.model_for(name)
            return model.id if model is not None else None

        spillover = spillover_problems(self.selectors, local_id, build_policy(self._routing).evict_for)
        if spillover:
            raise PathErrors(spillover)
        self._preload, skipped = resolve_preload(names, self.hooks.on_startup.preload)
        locate: Locate = context.get("locate", _unlocated)
        self._warnings = list(context.get("ignored", []))  # unknown keys dropped by the loader
        self._warnings += [locate(keys, UNKNOWN_KEY_IGNORED) for keys in self._routing.ignored]
        self._warnings += [locate(note.path, note.message) for note in skipped]
        if self.forward_api_keys and not self.api_keys:
            self._warnings.append(locate(("forwardApiKeys",), "has no effect without apiKeys"))
        self._warnings += _hide_credential_headers(self.ui.activity, locate)
        return self

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> model id, including `filters.setParamsByID` keys."""
        return self._aliases

    @property
    def routing_spec(self) -> RoutingSpec:
        """The validated `groups` / `matrix` / `routing` settings: eviction engine and priorities."""
        assert self._routing is not None
        return self._routing

    @property
    def preload(self) -> list[str]:
        """Model ids from `hooks.on_startup.preload`, aliases resolved, unknown names dropped."""
        return self._preload

    @property
    def warnings(self) -> list[str]:
        """Located notes about accepted-but-ignored values (llama-swap drops them silently)."""
        return self._warnings

    @property
    def source_path(self) -> str:
        """Where the config came from (the -config file, else the -config-dir), for messages."""
        return self._source_path

    @property
    def sources(self) -> list[str]:
        """Every file merged into this config, in merge order (what a reload watches)."""
        return self._sources

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb << 20  # `maxBodyMB` is in MiB

    @property
    def max_header_bytes(self) -> int:
        return self.max_header_kb << 10

    def model_for(self, name: str) -> ModelConfig | None:
        """The model a request names, by id or alias."""
        model_id = name if name in self.models else self._aliases.get(name)
        return self.models.get(model_id) if model_id is not None else None

