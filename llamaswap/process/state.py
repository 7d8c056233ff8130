"""The states an upstream process goes through."""

from __future__ import annotations

import enum


class ProcessState(enum.StrEnum):
    """Lifecycle of one upstream: stopped -> starting -> ready -> stopping -> stopped."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"

    def is_running(self) -> bool:
        """True for starting, ready and stopping: the process holds resources."""
        return self in (ProcessState.STARTING, ProcessState.READY, ProcessState.STOPPING)
