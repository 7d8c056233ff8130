"""One model's upstream server process: start, readiness, stop, TTL (SPEC 3)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from llamaswap.config.model import ModelConfig
from llamaswap.errors import ModelUnloaded, ShuttingDown, UpstreamStartFailed
from llamaswap.process import child as _child
from llamaswap.process.command import CommandError, parse_command, resolve_executable
from llamaswap.process.health import HealthPoller, Prober, go_duration, http_prober
from llamaswap.process.logs import LineLogger, LogBuffer
from llamaswap.process.state import ProcessState

HEALTH_TIMEOUT_GRACE = 5.0
DRAIN_TIMEOUT = 2.0
HARD_KILL_AFTER = 2.0
TAIL_LINES = 10

StateListener = Callable[[str, ProcessState, ProcessState], None]
GroupKiller = Callable[[int, int], None]

__all__ = ["Upstream", "go_duration"]


class Upstream:
    """The process behind one model, with its state machine and log buffer.

    All methods run on the reactor thread. Transitions: stopped -> starting ->
    ready -> stopping -> stopped; shutdown is terminal. Every real transition
    is announced to the state listeners.

    ``log_sink`` also receives the output (the shared upstream log). For tests,
    ``prober(url, timeout) -> Deferred[status]`` replaces the HTTP health probe
    and ``kill_group(pid, sig)`` replaces ``os.killpg``.
    """

    log = Logger(namespace="llamaswap.process")

    def __init__(
        self,
        model: ModelConfig,
        *,
        reactor: Any,
        log_sink: LogBuffer | None = None,
        prober: Prober | None = None,
        kill_group: GroupKiller = _child.kill_group,
    ) -> None:
        self.model = model
        self.model_id = model.id
        self.proxy_url = model.proxy
        self.state = ProcessState.STOPPED
        self.pid: int | None = None
        self.logs = LogBuffer()
        self.in_flight = 0
        self.last_error: str | None = None
        self.last_use = 0.0
        self.on_idle: Callable[[str], None] | None = None
        self._reactor = reactor
        self._log_sink = log_sink
        self._prober = prober
        self._kill_group = kill_group
        self._listeners: list[StateListener] = []
        self._start_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._child: _child.Child | None = None
        self._stop_children: list[_child.Child] = []
        self._poller: HealthPoller | None = None
        self._health_timer: IDelayedCall | None = None
        self._ttl_timer: IDelayedCall | None = None
        self._shutting_down = False
        self._line_loggers = {
            s: LineLogger(model.id, s) for s in ("stdout", "stderr")
        }

    # -- public API ---------------------------------------------------------------

    def add_state_listener(self, cb: StateListener) -> Callable[[], None]:
        """Call ``cb(model_id, old, new)`` on every transition; returns the remover."""
        self._listeners.append(cb)

        def remove() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)

        return remove

    def start(self) -> Deferred[None]:
        """Make the process ready: at once if ready, joining a start, after a stop."""
        if self.state is ProcessState.SHUTDOWN or self._shutting_down:
            return fail(ShuttingDown(f"[{self.model_id}] shutdown"))
        if self.state is ProcessState.READY:
            return succeed(None)
        d: Deferred[None] = Deferred(self._forget_start_waiter)
        self._start_waiters.append(d)
        if self.state is ProcessState.STOPPED:
            self._spawn()
        return d

    def stop(self, timeout: float) -> Deferred[None]:
        """Stop and reap the process (and its group); SIGKILL after ``timeout`` s."""
        if self._child is None:
            return succeed(None)
        d: Deferred[None] = Deferred(self._forget_stop_waiter)
        self._stop_waiters.append(d)
        if self.state is ProcessState.STARTING:
            aborted = self._take_start_waiters()
            self._begin_stop(timeout)
            for w in aborted:
                w.errback(ModelUnloaded(f"[{self.model_id}] start aborted: model unloaded"))
        elif self.state is ProcessState.READY:
            self._begin_stop(timeout)
        else:
            self._shorten_kill(timeout)
        return d

    def shutdown(self, timeout: float) -> Deferred[None]:
        """Stop the process, then enter the terminal shutdown state."""
        if self.state is ProcessState.SHUTDOWN:
            return succeed(None)
        self._shutting_down = True
        self._fail_starts(ShuttingDown(f"[{self.model_id}] shutdown"))
        try:
            d = self.stop(timeout)
        except Exception:
            self.log.failure("[{model}] stop during shutdown failed", model=self.model_id)
            d = succeed(None)

        def finish(result: object) -> None:
            self._cancel_ttl()
            self._set_state(ProcessState.SHUTDOWN)

        return d.addBoth(finish)

    def request_started(self) -> None:
        """A request is being served by this process (TTL paused)."""
        self.in_flight += 1
        self._cancel_ttl()

    def request_finished(self) -> None:
        """A request finished; the TTL clock restarts when none is left."""
        if self.in_flight <= 0:
            self.log.warn("[{model}] request_finished without request_started", model=self.model_id)
        self.in_flight = max(0, self.in_flight - 1)
        self.last_use = self._reactor.seconds()
        if self.in_flight == 0:
            self._arm_ttl()

    # -- starting -----------------------------------------------------------------

    def _spawn(self) -> None:
        """stopped -> starting: spawn the command and begin readiness checks."""
        self.last_error = None
        self._set_state(ProcessState.STARTING)
        env = {**os.environ, **self.model.env_dict()}
        try:
            argv = resolve_executable(parse_command(self.model.cmd), env)
        except CommandError as e:
            waiters = self._take_start_waiters()
            self._set_state(ProcessState.STOPPED)
            self._start_failed(f"[{self.model_id}] cannot start: {e}", waiters)
            return
        self.log.debug(
            "[{model}] Executing start command: {argv}, env: {env}",
            model=self.model_id, argv=argv, env=list(self.model.env),
        )
        proc = _child.Child(self._output, self._child_exited, self._child_ended)
        try:
            _child.spawn(self._reactor, proc, argv, env)
        except OSError as e:
            waiters = self._take_start_waiters()
            self._set_state(ProcessState.STOPPED)
            self._start_failed(
                f"[{self.model_id}] failed to start command '{' '.join(argv)}': {e}", waiters
            )
            return
        self._child = proc
        self.pid = proc.pid
        if self.model.health_check_disabled:
            self._became_ready()
            return
        self._health_timer = self._reactor.callLater(
            self.model.health_check_timeout, self._health_timed_out
        )
        url = self.proxy_url.rstrip("/") + "/" + self.model.check_endpoint.strip().lstrip("/")
        prober = self._prober if self._prober is not None else http_prober(self._reactor)
        self._poller = HealthPoller(self._reactor, prober, url, self._became_ready)
        self._poller.start()

    def _became_ready(self) -> None:
        """starting -> ready: release every waiter and arm the TTL."""
        if self.state is not ProcessState.STARTING:
            return
        self._stop_health()
        if not self.model.health_check_disabled:
            self.log.info(
                "[{model}] Health check passed on {url}", model=self.model_id,
                url=self.proxy_url + self.model.check_endpoint,
            )
        self._set_state(ProcessState.READY)
        self._arm_ttl()
        waiters, self._start_waiters = self._start_waiters, []
        for d in waiters:
            d.callback(None)

    def _health_timed_out(self) -> None:
        """The health check deadline passed: fail the start, stop with a 5 s grace."""
        self._health_timer = None
        if self.state is not ProcessState.STARTING:
            return
        detail = f" (last probe: {self._poller.last_result})" if self._poller else ""
        waiters = self._take_start_waiters()
        self._begin_stop(HEALTH_TIMEOUT_GRACE)
        self._start_failed(
            f"[{self.model_id}] health check timed out after "
            f"{go_duration(self.model.health_check_timeout)}{detail}",
            waiters,
        )

    def _start_failed(self, message: str, waiters: list[Deferred[None]]) -> None:
        """Record ``message`` and fail ``waiters`` (taken before the state changed)."""
        self.last_error = message
        self.log.error("{message}", message=message)
        for d in waiters:
            d.errback(UpstreamStartFailed(message))

    def _take_start_waiters(self) -> list[Deferred[None]]:
        """The pending starts, removed (so a listener's new start is not failed with them)."""
        waiters, self._start_waiters = self._start_waiters, []
        return waiters

    def _fail_starts(self, error: Exception) -> None:
        """Errback every pending start with ``error``."""
        for d in self._take_start_waiters():
            d.errback(error)

    def _stop_health(self) -> None:
        """Cancel the poller and the health deadline."""
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._health_timer is not None and self._health_timer.active():
            self._health_timer.cancel()
        self._health_timer = None

    # -- stopping -----------------------------------------------------------------

    def _begin_stop(self, timeout: float) -> None:
        """-> stopping: graceful stop now, SIGKILL to the group after ``timeout``."""
        proc = self._child
        assert proc is not None
        self._stop_health()
        self._cancel_ttl()
        self._set_state(ProcessState.STOPPING)
        if proc.exited is not None:
            return  # already gone; waiting for its pipes
        self._graceful_stop(proc, timeout)
        proc.kill_timer = self._reactor.callLater(timeout, self._kill, proc)

    def _graceful_stop(self, proc: _child.Child, timeout: float) -> None:
        """Run cmdStop (with ${PID}) if set, else SIGTERM to the group (via the launcher)."""
        if self.model.cmd_stop.strip() and proc.pid is not None:
            text = self.model.cmd_stop.replace("${PID}", str(proc.pid))
            env = {**os.environ, **self.model.env_dict()}
            try:
                argv = resolve_executable(parse_command(text), env)
                stopper = _child.Child(self._output, self._stopper_exited, self._stopper_ended)
                _child.spawn(self._reactor, stopper, argv, env)
            except (CommandError, OSError) as e:
                self.log.warn(
                    "[{model}] cmdStop failed ({error}); sending SIGTERM",
                    model=self.model_id, error=e,
                )
            else:
                self._stop_children.append(stopper)
                stopper.kill_timer = self._reactor.callLater(timeout, self._kill, stopper)
                return
        proc.signal("TERM")

    def _shorten_kill(self, timeout: float) -> None:
        """A second stop with a shorter timeout brings the SIGKILL forward."""
        proc = self._child
        if proc is None or proc.kill_timer is None or not proc.kill_timer.active():
            return
        when = self._reactor.seconds() + timeout
        if when < proc.kill_timer.getTime():
            proc.kill_timer.reset(timeout)

    def _kill(self, proc: _child.Child) -> None:
        """The graceful timeout passed: the launcher SIGKILLs and reaps the tree.

        Should the launcher not exit within HARD_KILL_AFTER seconds, the whole
        group (launcher included) gets SIGKILL from here.
        """
        proc.kill_timer = None
        if proc.pid is None or proc.exited is not None:
            return
        self.log.info("[{model}] graceful stop timed out; killing process group {pid}",
                      model=self.model_id, pid=proc.pid)
        proc.kill_now()
        if proc.exited is None:
            proc.hard_kill_timer = self._reactor.callLater(
                HARD_KILL_AFTER, self._hard_kill, proc
            )

    def _hard_kill(self, proc: _child.Child) -> None:
        """The launcher did not exit in time: SIGKILL the whole group from here."""
        proc.hard_kill_timer = None
        if proc.pid is not None and proc.exited is None:
            self._kill_group(proc.pid, signal.SIGKILL)

    def _child_exited(self, proc: _child.Child) -> None:
        """Reaped: sweep the rest of its group, give the pipes a moment to drain."""
        drain = proc.drain_timer
        proc.drain_timer = None
        proc.cancel_timers()
        proc.drain_timer = drain
        if proc.pid is not None:
            self._kill_group(proc.pid, signal.SIGKILL)
        proc.drain_timer = self._reactor.callLater(DRAIN_TIMEOUT, proc.force_close)

    def _child_ended(self, proc: _child.Child) -> None:
        """Reaped and pipes closed: -> stopped (reporting why), then maybe restart."""
        if proc is not self._child:
            return
        for logger in self._line_loggers.values():
            logger.flush()
        self._child = None
        self.pid = None
        how = _child.describe_exit(proc.exited)
        was = self.state
        failed = self._take_start_waiters() if was is ProcessState.STARTING else []
        self._stop_health()
        self._cancel_ttl()
        self._set_state(ProcessState.STOPPED)
        if was is ProcessState.STARTING:
            lines = "\n".join(proc.tail.tail_lines(TAIL_LINES)) or "(no output)"
            self._start_failed(
                f"[{self.model_id}] upstream command exited prematurely ({how}); "
                f"last output:\n{lines}",
                failed,
            )
        elif was is ProcessState.READY:
            self.last_error = f"[{self.model_id}] upstream process exited unexpectedly ({how})"
            self.log.warn("{message}", message=self.last_error)
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)
        if self._shutting_down:
            self._fail_starts(ShuttingDown(f"[{self.model_id}] shutdown"))
        elif self._start_waiters and self.state is ProcessState.STOPPED:
            self._spawn()

    def _stopper_exited(self, proc: _child.Child) -> None:
        """The cmdStop process was reaped: log a failure, sweep its group."""
        proc.cancel_timers()
        if proc.exited is not None and _child.describe_exit(proc.exited) != "exit code 0":
            self.log.warn("[{model}] cmdStop ended with {how}", model=self.model_id,
                          how=_child.describe_exit(proc.exited))
        if proc.pid is not None:
            self._kill_group(proc.pid, signal.SIGKILL)
        proc.drain_timer = self._reactor.callLater(DRAIN_TIMEOUT, proc.force_close)

    def _stopper_ended(self, proc: _child.Child) -> None:
        """The cmdStop process is fully gone."""
        if proc in self._stop_children:
            self._stop_children.remove(proc)

    # -- TTL, output, state -------------------------------------------------------

    def _arm_ttl(self) -> None:
        """(Re)start the idle timer when ready, idle and a TTL is set."""
        self._cancel_ttl()
        if self.model.ttl > 0 and self.state is ProcessState.READY and self.in_flight == 0:
            self._ttl_timer = self._reactor.callLater(self.model.ttl, self._ttl_expired)

    def _cancel_ttl(self) -> None:
        """Disarm the idle timer."""
        if self._ttl_timer is not None and self._ttl_timer.active():
            self._ttl_timer.cancel()
        self._ttl_timer = None

    def _ttl_expired(self) -> None:
        """Idle for ``ttl`` seconds: ask the router (on_idle) or stop ourselves."""
        self._ttl_timer = None
        if self.state is not ProcessState.READY or self.in_flight:
            return
        self.log.info("[{model}] Unloading model, TTL of {ttl}s reached",
                      model=self.model_id, ttl=f"{self.model.ttl:g}")
        if self.on_idle is None:
            self.stop(self.model.unload_timeout).addErrback(
                lambda f: self.log.failure("[{model}] TTL stop failed", f, model=self.model_id)
            )
            return
        try:
            self.on_idle(self.model_id)
        except Exception:
            self.log.failure("[{model}] on_idle raised", model=self.model_id)
        self._arm_ttl()  # still ready (the router chose not to unload): ask again later

    def _output(self, data: bytes, stream: str) -> None:
        """Upstream output: into the model's buffer, the shared sink and the log."""
        self.logs.write(data)
        if self._log_sink is not None:
            self._log_sink.write(data)
        self._line_loggers[stream].feed(data)
        if self._poller is not None:
            self._poller.poke()  # servers log when they are ready: look now

    def _set_state(self, new: ProcessState) -> None:
        """Change state and tell every listener (a raising listener is logged)."""
        old = self.state
        if old is new:
            return
        self.state = new
        self.log.debug("[{model}] {old} -> {new}", model=self.model_id, old=old.value,
                       new=new.value)
        for cb in list(self._listeners):
            try:
                cb(self.model_id, old, new)
            except Exception:
                self.log.failure("[{model}] state listener raised", model=self.model_id)

    def _forget_start_waiter(self, d: Deferred[None]) -> None:
        """A start waiter was cancelled: stop tracking it (the start goes on)."""
        if d in self._start_waiters:
            self._start_waiters.remove(d)

    def _forget_stop_waiter(self, d: Deferred[None]) -> None:
        """A stop waiter was cancelled: stop tracking it (the stop goes on)."""
        if d in self._stop_waiters:
            self._stop_waiters.remove(d)
