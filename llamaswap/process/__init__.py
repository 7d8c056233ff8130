"""Upstream processes: spawn, health-check, stop, TTL and logs."""

from llamaswap.process.state import ProcessState

__all__ = ["ProcessState"]
