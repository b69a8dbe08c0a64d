"""The llama-swap config file: loading, macros and the typed result."""

from llama_swap.config.fields import ConfigError, Filters, Timeouts
from llama_swap.config.load import load_config, load_config_text
from llama_swap.config.model import Capabilities, Compat, ModelConfig
from llama_swap.config.schema import Config
from llama_swap.config.sections import (
    ActivityConfig,
    HooksConfig,
    OnStartupConfig,
    PeerConfig,
    PeerTimeouts,
    PerformanceConfig,
    ProfileConfig,
    SelectorConfig,
    SelectorSettings,
    StoreConfig,
    UIConfig,
    UpstreamConfig,
)

__all__ = [
    "ActivityConfig",
    "Capabilities",
    "Compat",
    "Config",
    "ConfigError",
    "Filters",
    "HooksConfig",
    "ModelConfig",
    "OnStartupConfig",
    "PeerConfig",
    "PeerTimeouts",
    "PerformanceConfig",
    "ProfileConfig",
    "SelectorConfig",
    "SelectorSettings",
    "StoreConfig",
    "Timeouts",
    "UIConfig",
    "UpstreamConfig",
    "load_config",
    "load_config_text",
]
