"""The llama-swap config file: loading, macros and the typed result."""

from llama_swap.config.load import load_config, load_config_text
from llama_swap.config.schema import (
    Capabilities,
    Compat,
    Config,
    ConfigError,
    Filters,
    ModelConfig,
    Timeouts,
)

__all__ = [
    "Capabilities",
    "Compat",
    "Config",
    "ConfigError",
    "Filters",
    "ModelConfig",
    "Timeouts",
    "load_config",
    "load_config_text",
]
