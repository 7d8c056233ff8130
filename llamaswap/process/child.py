"""Spawning one command through the launcher, and the protocol that watches it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from llamaswap.process.logs import LogBuffer

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
WATCH_FD = 3
TAIL_BYTES = 8 * 1024


def launcher_argv(argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` under the launcher (setsid, pdeathsig, group kill)."""
    return [sys.executable, "-I", "-S", LAUNCHER, str(WATCH_FD), "--", *argv]


def spawn(
    reactor: Any, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]
) -> IProcessTransport:
    """Spawn ``argv`` through the launcher with ``env``; stdout and stderr are piped."""
    args = launcher_argv(argv)
    transport: IProcessTransport = reactor.spawnProcess(
        protocol,
        args[0],
        args,
        env=dict(env),
        childFDs={0: "w", 1: "r", 2: "r", WATCH_FD: "w"},
    )
    transport.closeStdin()
    return transport


def kill_group(pid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pid``; a group that is gone is not an error."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe_exit(reason: Failure | None) -> str:
    """'exit code 1' / 'killed by signal 9 (SIGKILL)' for a process end reason."""
    value = getattr(reason, "value", None)
    sig = getattr(value, "signal", None)
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by signal {sig} ({name})"
    code = getattr(value, "exitCode", None)
    return f"exit code {code if code is not None else 0}"


class Child(ProcessProtocol):
    """One spawned process: its output, exit and end, reported to callbacks.

    ``exited`` holds the reason once the process is reaped (processExited);
    ``ended`` becomes True once its pipes are closed too (processEnded).
    """

    def __init__(
        self,
        on_output: Callable[[bytes, str], None],
        on_exited: Callable[[Child], None],
        on_ended: Callable[[Child], None],
    ) -> None:
        self._on_output = on_output
        self._on_exited = on_exited
        self._on_ended = on_ended
        self.pid: int | None = None
        self.tail = LogBuffer(TAIL_BYTES)
        self.exited: Failure | None = None
        self.ended = False
        self.kill_timer: IDelayedCall | None = None
        self.hard_kill_timer: IDelayedCall | None = None
        self.drain_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Remember the pid (the launcher's, which is also the group id)."""
        self.pid = self.transport.pid if self.transport is not None else None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Collect stdout/stderr."""
        self.tail.write(data)
        self._on_output(data, "stderr" if childFD == 2 else "stdout")

    def processExited(self, reason: Failure) -> None:
        """The process is reaped (its pipes may still be open)."""
        if self.exited is None:
            self.exited = reason
            self._on_exited(self)

    def processEnded(self, reason: Failure) -> None:
        """The process is reaped and every pipe is closed."""
        if self.exited is None:
            self.exited = reason
        if not self.ended:
            self.ended = True
            self.cancel_timers()
            self._on_ended(self)

    def signal(self, name: str) -> None:
        """Signal the launcher, which forwards TERM/INT/... to the whole group."""
        if self.transport is None or self.exited is not None:
            return
        try:
            self.transport.signalProcess(name)
        except Exception:  # ProcessExitedAlready and OSError: it is going anyway
            pass

    def kill_now(self) -> None:
        """Ask the launcher to SIGKILL and reap the whole tree, then exit."""
        if self.transport is None or self.exited is not None:
            return
        try:
            self.transport.writeToChild(WATCH_FD, b"K")
        except Exception:  # pipe already closed: the launcher is gone
            pass

    def force_close(self) -> None:
        """Close our ends of the pipes so processEnded fires even if pipes are held."""
        if self.transport is not None and not self.ended:
            self.transport.loseConnection()

    def cancel_timers(self) -> None:
        """Cancel the kill and drain timers."""
        for timer in (self.kill_timer, self.hard_kill_timer, self.drain_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.kill_timer = self.hard_kill_timer = self.drain_timer = None
