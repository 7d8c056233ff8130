"""A tiny supervisor every upstream is started through, so none is ever orphaned.

Run as ``python -I -S launcher.py FD -- EXE ARGS...`` (by file path, standard
library only, so the interpreter starts in a few milliseconds). It:

1. calls ``setsid()``: it leads a new session and process group, so llamaswap can
   signal the whole tree with ``killpg(pid, sig)``; and becomes a child
   subreaper (Linux), so every orphaned descendant is re-parented to it;
2. forks the real command (stdin from /dev/null; stdout/stderr inherited), which
   gets ``PR_SET_PDEATHSIG=SIGKILL`` so it dies if the launcher dies;
3. forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 it receives to the
   whole group (once: it ignores its own copy);
4. watches file descriptor ``FD``, a pipe whose write end only llamaswap holds:
   a ``K`` byte means "kill now" (SIGKILL the tree, reap it, then exit);
   end of file means llamaswap is gone (even by SIGKILL): it SIGKILLs the whole
   group, itself included;
5. when the command exits, SIGKILLs every remaining descendant, reaps them all,
   and only then exits with the command's status (re-raising the signal that
   killed it). So when llamaswap reaps the launcher, the whole tree is gone.
"""

import os
import select
import signal
import sys
import time

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
REAP_LIMIT = 5.0


def _prctl(option: int, value: int) -> None:
    """prctl(option, value) through libc; silently nothing where unavailable."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_group(sig: int) -> None:
    """Send ``sig`` to this process group, ignoring our own copy of it."""
    if sig == signal.SIGKILL:
        os.killpg(0, sig)
        return
    previous = signal.signal(sig, signal.SIG_IGN)
    try:
        os.killpg(0, sig)  # our own copy is delivered (and discarded) before this returns
    except OSError:
        pass
    finally:
        signal.signal(sig, previous)


def _exec_child(argv: list[str], watch_fd: int, launcher_pid: int) -> None:
    """In the forked child: reset signals, set pdeathsig, exec the command."""
    try:
        for sig in (*FORWARDED, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.close(watch_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher_pid:
            os._exit(137)
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, f"llamaswap launcher: cannot exec {argv[0]!r}: {e}\n".encode())
    finally:
        os._exit(127)


def _descendants(me: int) -> list[int]:
    """Processes in our group or re-parented to us (Linux /proc), zombies included."""
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me or int(fields[2]) == me:  # ppid, pgrp
            found.append(int(name))
    return found


def _reap_all(main: int, status: int | None, wake_fd: int) -> int | None:
    """SIGKILL and reap every descendant; returns the main child's wait status.

    Between rounds it waits on ``wake_fd`` (the signal wakeup fd), so a SIGCHLD ends the
    wait at once; the 2 ms cap covers descendants that are not our children yet.
    """
    me = os.getpid()
    deadline = time.monotonic() + REAP_LIMIT
    while True:
        for pid in _descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while True:
                pid, st = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                if pid == main:
                    status = st
        except ChildProcessError:
            if not _descendants(me) or time.monotonic() > deadline:
                return status
        if time.monotonic() > deadline:
            return status
        ready, _, _ = select.select([wake_fd], [], [], 0.002)
        if ready:
            try:
                os.read(wake_fd, 512)
            except BlockingIOError:
                pass


def main(args: list[str]) -> int:
    """Supervise ``args`` (``FD -- EXE ARGS...``)."""
    if len(args) < 3 or args[1] != "--":
        os.write(2, b"usage: launcher.py FD -- EXE [ARGS...]\n")
        return 2
    watch_fd = int(args[0])
    argv = args[2:]
    try:
        os.setsid()
    except OSError:
        pass
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    os.set_blocking(watch_fd, False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []  # signal numbers to forward
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: pending.append(int(s)))
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [*FORWARDED, signal.SIGCHLD])
    me = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(wake_r)
        os.close(wake_w)
        _exec_child(argv, watch_fd, me)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [*FORWARDED, signal.SIGCHLD])
    status: int | None = None
    while status is None:
        while pending:
            _kill_group(pending.pop(0))
        try:
            while True:
                pid, st = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                if pid == child:
                    status = st
        except ChildProcessError:
            pass
        if status is not None:
            break
        try:
            ready, _, _ = select.select([watch_fd, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if watch_fd in ready:
            try:
                data = os.read(watch_fd, 512)
            except BlockingIOError:
                data = b""
                continue
            if not data:  # llamaswap is gone
                _kill_group(signal.SIGKILL)
            if b"K" in data:  # llamaswap asks for a kill now
                break
    status = _reap_all(child, status, wake_r)
    if status is None or os.WIFSIGNALED(status):
        died_of = os.WTERMSIG(status) if status is not None else signal.SIGKILL
        if died_of not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(died_of, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [died_of])
        os.kill(me, died_of)
        return 128 + died_of
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
