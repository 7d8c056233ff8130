"""A tiny supervisor every upstream is started through, so none is ever orphaned.

Run as ``python -I -S launcher.py FD -- EXE ARGS...`` (by file path, standard
library only, so the interpreter starts in a few milliseconds). It:

1. calls ``setsid()``: it leads a new session and process group, so llamaswap can
   signal the whole tree with ``killpg(pid, sig)``;
2. forks the real command (stdin from /dev/null; stdout/stderr inherited), which
   gets ``PR_SET_PDEATHSIG=SIGKILL`` so it dies if the launcher dies;
3. forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 it receives to the
   whole group (once: it ignores its own copy);
4. watches file descriptor ``FD``, a pipe whose write end only llamaswap holds:
   end of file means llamaswap is gone (even by SIGKILL), and it SIGKILLs the
   whole group, itself included;
5. when the command exits, SIGKILLs whatever is left in its group (forked
   helpers, ``sh -c`` children) and exits with the command's status (re-raising
   the signal that killed it).
"""

import os
import select
import signal
import sys

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the launcher's group kill still applies
        pass


def _kill_group(sig: int) -> None:
    """Send ``sig`` to this process group, ignoring our own copy of it."""
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.killpg(0, sig)
    except OSError:
        pass


def _exec_child(argv: list[str], watch_fd: int, launcher_pid: int) -> None:
    """In the forked child: reset signals, set pdeathsig, exec the command."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.close(watch_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        _set_pdeathsig()
        if os.getppid() != launcher_pid:
            os._exit(137)
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, f"llamaswap launcher: cannot exec {argv[0]!r}: {e}\n".encode())
        os._exit(127)
    except BaseException:
        os._exit(127)


def main(args: list[str]) -> int:
    """Supervise ``args`` (``FD -- EXE ARGS...``); returns only on errors."""
    if len(args) < 3 or args[1] != "--":
        os.write(2, b"usage: launcher.py FD -- EXE [ARGS...]\n")
        return 2
    watch_fd = int(args[0])
    argv = args[2:]
    try:
        os.setsid()
    except OSError:
        pass
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
    while True:
        while pending:
            _kill_group(pending.pop(0))
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
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
                data = b"-"
            if not data:  # llamaswap is gone
                _kill_group(signal.SIGKILL)
    _kill_others()
    if os.WIFSIGNALED(status):
        died_of = os.WTERMSIG(status)
        signal.signal(died_of, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [died_of])
        os.kill(me, died_of)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def _kill_others() -> None:
    """SIGKILL every other process still in our group (Linux /proc), until none is left."""
    me = os.getpid()
    for _ in range(10):
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        found = False
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                if os.getpgid(int(name)) == me:
                    os.kill(int(name), signal.SIGKILL)
                    found = True
            except OSError:
                continue
        if not found:
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
