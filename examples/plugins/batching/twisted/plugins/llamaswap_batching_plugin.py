"""Twisted plugin drop-in: makes the ``batching`` scheduler visible to getPlugins."""

from llamaswap_batching import batching

__all__ = ["batching"]
