"""Twisted's accept-error log events (out of file descriptors) folded into one line per interval.

When the process runs out of open files, twisted's listening port logs three lines for
every connection it has to refuse ("EMFILE encountered ...", "EMFILE recovery: Closed
socket from ...", "Re-reserving ..."), and a traceback when it cannot re-reserve its
spare descriptor. Under a flood of connections that is thousands of lines a second.
``AcceptErrors`` swallows those events and says, at most once per interval, how many
connections were refused and what the open-file limit is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamaswap.fdlimit import current_soft_limit

PORT_NAMESPACES = frozenset({
    "twisted.internet.tcp.Port",
    "twisted.internet.unix.Port",
    # the port's spare descriptor logs on its own when it cannot be reserved
    "twisted.internet.tcp._FileDescriptorReservation",
})
REFUSED = (
    "EMFILE recovery: Closed socket from {address}",
    "Could not accept new connection ({acceptError})",
)
QUIET = (
    "EMFILE encountered; releasing reserved file descriptor.",
    "Re-reserving EMFILE recovery file descriptor.",
    "Could not reserve EMFILE recovery file descriptor.",
    "Could not re-reserve EMFILE recovery file descriptor.",
)
EVERY = 10.0


def is_accept_error(event: dict[str, Any]) -> bool:
    """Whether ``event`` is one of the listening port's out-of-descriptors events."""
    return event.get("log_namespace") in PORT_NAMESPACES and (
        event.get("log_format") in REFUSED or event.get("log_format") in QUIET
    )


class AcceptErrors:
    """Counts refused connections; ``absorb`` says which events to drop and when to report."""

    def __init__(
        self, every: float = EVERY, limit: Callable[[], int | None] = current_soft_limit
    ) -> None:
        """At most one report per ``every`` seconds; ``limit`` gives the open-file limit."""
        self.every = every
        self.limit = limit
        self.refused = 0
        self.total = 0
        self._since: float | None = None

    def absorb(self, event: dict[str, Any]) -> str | None:
        """None: not an accept-error event. "": swallowed. Else the report line to log."""
        if event.get("log_namespace") not in PORT_NAMESPACES:
            return None
        text = event.get("log_format")
        if text in REFUSED:
            self.refused += 1
            self.total += 1
        elif text not in QUIET:
            return None
        now = float(event.get("log_time") or 0.0)
        if self._since is not None and now - self._since < self.every:
            return ""
        first = self._since is None
        period = 0.0 if first else now - self._since  # type: ignore[operator]
        self._since = now
        refused, self.refused = self.refused, 0
        limit = self.limit()
        shown = "unknown" if limit is None else str(limit)
        if first:
            return (
                f"out of file descriptors (open-file limit {shown}): new connections are "
                "being refused; counts follow at most every "
                f"{self.every:g}s (see clientTimeouts and the open-file limit)"
            )
        return (
            f"out of file descriptors (open-file limit {shown}): {refused} new connections "
            f"refused in the last {period:.0f}s, {self.total} in all"
        )


__all__ = ["PORT_NAMESPACES", "AcceptErrors", "is_accept_error"]
