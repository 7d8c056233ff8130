"""Placeholder loader: replaced by the full implementation (issue 2)."""

from __future__ import annotations

from llamaswap.config.model import Config


def load_config_text(text: str, source: str = "<string>") -> Config:
    """Parse configuration text into a Config."""
    raise NotImplementedError


def load_config(path: str) -> Config:
    """Read and parse a configuration file."""
    raise NotImplementedError
