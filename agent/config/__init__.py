"""The config: one TOML file plus equipment profiles and the rules pack, validated once."""

from agent.config.errors import EX_CONFIG, ConfigError
from agent.config.load import load_config
from agent.config.rules import KNOWN_KINDS

__all__ = ["EX_CONFIG", "KNOWN_KINDS", "ConfigError", "load_config"]
