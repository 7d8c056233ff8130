"""The open-file limit: raised from the soft to the hard limit at start, as Go programs do.

Every client connection, upstream connection and model process takes open files. Linux
often starts a service with a soft limit of 1,024 although the hard limit is far higher;
llamaswap raises the soft limit to the hard one when it starts and logs the figure.
"""

from __future__ import annotations

import attrs

try:
    import resource
except ImportError:  # not a POSIX system: nothing to raise
    resource = None  # type: ignore[assignment]

# select() cannot watch descriptors past this: never raise beyond it under a select reactor.
SELECT_LIMIT = 1024
NR_OPEN = "/proc/sys/fs/nr_open"


@attrs.frozen
class OpenFileLimit:
    """The soft limit before and after raising it, and the hard limit (-1: unlimited)."""

    before: int
    soft: int
    hard: int

    def describe(self) -> str:
        """One log line's worth: the figure, and whether it was raised."""
        if self.soft > self.before:
            return f"open-file limit: {self.soft} (raised from {self.before})"
        if self.soft == self.hard or self.hard < 0:
            return f"open-file limit: {self.soft} (the hard limit)"
        return f"open-file limit: {self.soft} (the hard limit is {self.hard})"


def current_soft_limit() -> int | None:
    """The soft open-file limit now, or None where there is none."""
    if resource is None:
        return None
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _ceiling(hard: int) -> int:
    """The highest soft limit to ask for: the hard one, or the kernel's cap when unlimited."""
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        with open(NR_OPEN, encoding="ascii") as f:  # read once at start, not per request
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1 << 20


def raise_open_file_limit(cap: int | None = None) -> OpenFileLimit | None:
    """Raise the soft open-file limit to the hard limit (or ``cap``); None without rlimits."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard)
    if cap is not None:
        target = min(target, cap)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    unlimited = resource.RLIM_INFINITY
    return OpenFileLimit(
        before=-1 if soft == unlimited else int(soft),
        soft=-1 if after == unlimited else int(after),
        hard=-1 if hard == unlimited else int(hard),
    )


__all__ = ["OpenFileLimit", "current_soft_limit", "raise_open_file_limit"]
