"""Configuration: YAML in, frozen typed objects out (``load_config``)."""

from llamaswap.config.errors import ConfigError
from llamaswap.config.loader import load_config, load_config_sources, load_config_text
from llamaswap.config.model import Config, ModelConfig

__all__ = [
    "Config",
    "ConfigError",
    "ModelConfig",
    "load_config",
    "load_config_sources",
    "load_config_text",
]
