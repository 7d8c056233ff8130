"""A fake process reactor on a Clock, for unit tests of process management.

After ``twisted/runner/test/test_procmon.py``: ``spawnProcess`` returns a
``FakeProcess`` that records signals; TERM ends it after ``term_delay``
seconds of Clock time (unless ``ignore_term``); the launcher's kill-now
byte (``K`` on fd 3) and ``kill_group(pid, SIGKILL)`` end it at once.
Nothing real is spawned or signalled.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure


class FakeProcess:
    """A process that exists only in memory; tests end it at will."""

    def __init__(
        self,
        reactor: FakeProcessReactor,
        proto: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None,
        pid: int,
    ) -> None:
        self.reactor = reactor
        self.proto = proto
        self.executable = executable
        self.args = list(args)
        self.env = dict(env or {})
        self.pid: int | None = pid
        self.group = pid
        self.signals: list[str] = []
        self.writes: list[tuple[int, bytes]] = []
        self.stdin_closed = False
        self.lost = False
        self.exited = False
        self.ended = False

    @property
    def argv(self) -> list[str]:
        """The command the launcher would exec (the args after ``--``)."""
        return self.args[self.args.index("--") + 1 :] if "--" in self.args else self.args

    def output(self, data: bytes, fd: int = 1) -> None:
        """Pretend the process wrote ``data`` on ``fd``."""
        self.proto.childDataReceived(fd, data)

    def exit(self, code: int = 0, sig: int | None = None, pipes_closed: bool = True) -> None:
        """Pretend the process exited (and, by default, closed its pipes)."""
        if self.exited:
            return
        self.exited = True
        self.pid = None
        reason: Failure
        if code == 0 and sig is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(None if sig else code, sig))
        self._reason = reason
        self.proto.processExited(reason)
        if pipes_closed:
            self.close_pipes()

    def close_pipes(self) -> None:
        """Pretend every pipe is closed (processEnded once exited)."""
        if self.exited and not self.ended:
            self.ended = True
            self.proto.processEnded(self._reason)

    # IProcessTransport subset used by llamaswap
    def signalProcess(self, name: str) -> None:
        """Record the signal; TERM ends the process after ``term_delay``."""
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)
        if name == "KILL":
            self.exit(sig=signal.SIGKILL)
        elif name in ("TERM", "INT") and not self.reactor.ignore_term:
            self.reactor.callLater(self.reactor.term_delay, self.exit, 0, signal.SIGTERM)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        """Record writes; a ``K`` on fd 3 is the launcher's kill-now (unless stuck)."""
        self.writes.append((childFD, data))
        if childFD == 3 and b"K" in data and not self.reactor.launcher_stuck:
            self.exit(sig=signal.SIGKILL)

    def closeStdin(self) -> None:
        """Record that stdin was closed."""
        self.stdin_closed = True

    def loseConnection(self) -> None:
        """Close our pipe ends: processEnded follows if the process exited."""
        self.lost = True
        self.close_pipes()


class FakeProcessReactor(MemoryReactorClock):
    """A MemoryReactorClock whose spawnProcess makes FakeProcesses."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.group_signals: list[tuple[int, int]] = []
        self.term_delay = 0.5
        self.ignore_term = False
        self.launcher_stuck = False
        self.spawn_error: Exception | None = None
        self._next_pid = 1000

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, Any] | None = None,
    ) -> FakeProcess:
        """Record and return a FakeProcess connected to ``processProtocol``."""
        if self.spawn_error is not None:
            raise self.spawn_error
        self._next_pid += 1
        proc = FakeProcess(self, processProtocol, executable, args, env, self._next_pid)
        self.processes.append(proc)
        processProtocol.makeConnection(proc)  # type: ignore[arg-type]
        return proc

    def kill_group(self, pid: int, sig: int) -> None:
        """The Upstream's group killer: SIGKILL ends the group leader at once."""
        self.group_signals.append((pid, sig))
        for proc in self.processes:
            if proc.group == pid and not proc.exited:
                if sig == signal.SIGKILL:
                    proc.exit(sig=signal.SIGKILL)
                elif sig == signal.SIGTERM and not self.ignore_term:
                    self.callLater(self.term_delay, proc.exit, 0, signal.SIGTERM)
