"""One `models.<id>` entry: how to start, reach and stop an upstream, and how to present it."""

import hashlib
import json
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, PrivateAttr, field_validator

from llama_swap.config.command import split_command
from llama_swap.config.fields import (
    Filters,
    HttpUrl,
    NonEmptyText,
    RawMap,
    Section,
    Text,
    Timeouts,
)
from llama_swap.config.macros import DEFAULT_PROXY, put_port

if TYPE_CHECKING:
    from llama_swap.config.schema import Config

DEFAULT_CONCURRENCY_LIMIT = 10
COMFYUI_MODEL_ID = "comfyui_auto"
COMFYUI_MIN_CONCURRENCY = 50

_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _check_env_entry(entry: str) -> str:
    if not _ENV_ENTRY.match(entry):
        raise ValueError("must look like NAME=value")
    return entry


EnvEntry = Annotated[Text, AfterValidator(_check_env_entry)]
Modality = Literal["text", "audio", "image"]


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
    proxy: HttpUrl = DEFAULT_PROXY
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
    warm_swap: bool | None = None  # None: the global `warmSwap`

    _id: str = PrivateAttr(default="")
    _port: int | None = PrivateAttr(default=None)
    _template: dict[str, Any] | None = PrivateAttr(default=None)  # before `${PORT}` was put in

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
    def argv_template(self) -> list[str]:
        """`cmd` split as written, `${PORT}` still in it: the command without the port it
        happened to get (which may move between runs)."""
        return split_command(self._template["cmd"]) if self._template is not None else self.argv

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

    def fingerprint(self) -> str:
        """A digest of every setting a running upstream was started with.

        On reload, a model whose fingerprint changed must be restarted; anything else
        (ttl, aliases, filters, listing fields, limits...) is read per request and can
        change under a running upstream.
        """
        started_with = {
            "argv": self.argv,
            "stop_argv": self.stop_argv,
            "env": sorted(self.env_map.items()),
            "proxy": self.proxy,
            "check_endpoint": self.check_endpoint,
            "port": self.port,
            "timeouts": self.timeouts.model_dump(),
        }
        encoded = json.dumps(started_with, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()

    def with_port(self, port: int) -> "ModelConfig":
        """The same model on another port: the settings that held `${PORT}` taken again with
        ``port`` (when the assigned one turns out to be taken by another program)."""
        assert self._template is not None and self._port is not None, "only a ${PORT} model moves"
        before, after = (ModelConfig.model_validate(put_port(self._template, number)) for number in (self._port, port))
        moved = self.model_copy(update={name: getattr(after, name) for name in type(self).model_fields
                                        if getattr(after, name) != getattr(before, name)})
        moved._port = port
        return moved

    def _settle(self, model_id: str, port: int | None, template: dict[str, Any] | None, config: "Config") -> None:
        """Fill identity and inherit global settings (`-1`/`0`/unset mean "use global")."""
        self._id = model_id
        self._port = port
        self._template = template
        if self.ttl == -1:
            self.ttl = config.global_ttl
        if self.unload_timeout == 0:
            self.unload_timeout = config.unload_timeout
        if self.concurrency_limit == 0:
            self.concurrency_limit = DEFAULT_CONCURRENCY_LIMIT
        if self.send_loading_state is None:
            self.send_loading_state = config.send_loading_state
        if self.warm_swap is None:
            self.warm_swap = config.warm_swap
        self.health_check_timeout = config.health_check_timeout
        if model_id == COMFYUI_MODEL_ID:
            self.compat.ignore_websockets = True
            self.concurrency_limit = max(self.concurrency_limit, COMFYUI_MIN_CONCURRENCY)


def _split(command: str) -> list[str]:
    try:
        return split_command(command)
    except ValueError as err:
        raise ValueError(f"cannot be split into arguments: {err}") from None
