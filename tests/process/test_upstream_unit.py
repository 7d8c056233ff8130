"""Upstream state machine on a fake process reactor and a Clock (no real processes)."""

from __future__ import annotations

import itertools
import signal
import sys
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from llamaswap.config.model import ModelConfig
from llamaswap.errors import ModelUnloaded, ShuttingDown, UpstreamStartFailed
from llamaswap.process import health
from llamaswap.process.logs import LogBuffer
from llamaswap.process.state import ProcessState as S
from llamaswap.process.upstream import Upstream, go_duration
from llamaswap.testing.fakeprocess import FakeProcess, FakeProcessReactor


class FakeProber:
    """Records probes; tests answer them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred[int]]] = []
        self.cancelled: list[str] = []

    def __call__(self, url: str, timeout: float) -> Deferred[int]:
        d: Deferred[int] = Deferred(lambda _: self.cancelled.append(url))
        self.calls.append((url, d))
        return d

    def answer(self, status: int) -> None:
        """Answer the latest probe with an HTTP status."""
        self.calls[-1][1].callback(status)

    def refuse(self) -> None:
        """Answer the latest probe with a connection error."""
        self.calls[-1][1].errback(Failure(ConnectionRefusedError()))


def model(**kw: Any) -> ModelConfig:
    """A model config with a cmd that resolves (the Python interpreter)."""
    base: dict[str, Any] = dict(
        id="m1", cmd=f"{sys.executable} -c pass", proxy="http://127.0.0.1:9999",
        health_check_timeout=15,
    )
    base.update(kw)
    return ModelConfig(**base)


class Env:
    """An Upstream wired to a fake reactor and prober, recording transitions."""

    def __init__(self, **kw: Any) -> None:
        self.reactor = FakeProcessReactor()
        self.prober = FakeProber()
        self.sink = LogBuffer()
        self.up = Upstream(
            model(**kw), reactor=self.reactor, log_sink=self.sink, prober=self.prober,
            kill_group=self.reactor.kill_group,
        )
        self.transitions: list[tuple[S, S]] = []
        self.up.add_state_listener(lambda mid, old, new: self.transitions.append((old, new)))

    @property
    def proc(self) -> FakeProcess:
        """The most recently spawned fake process."""
        return self.reactor.processes[-1]

    def ready(self) -> Deferred[None]:
        """Start and pass the first health probe."""
        d = self.up.start()
        self.prober.answer(200)
        return d


def result(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred (fails the test if it has not fired)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure(d: Deferred[Any]) -> Failure:
    """The Failure of a fired, failed Deferred."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and isinstance(out[0], Failure), f"expected a failure, got {out}"
    return out[0]


def pending(d: Deferred[Any]) -> bool:
    """True if ``d`` has not fired."""
    return not d.called


def test_start_spawns_through_launcher_with_env_and_first_probe_at_once() -> None:
    """Start spawns the launcher (setsid) with os.environ + model env and probes immediately."""
    e = Env(env=("FOO=bar", "FOO=baz", "X=1"))
    d = e.up.start()
    assert e.up.state is S.STARTING and pending(d)
    assert e.proc.args[1:3] == ["-I", "-S"] and e.proc.args[3].endswith("launcher.py")
    assert e.proc.argv == [sys.executable, "-c", "pass"]
    assert e.proc.env["FOO"] == "baz" and e.proc.env["X"] == "1" and "PATH" in e.proc.env
    assert e.proc.stdin_closed
    assert [u for u, _ in e.prober.calls] == ["http://127.0.0.1:9999/health"]
    assert e.up.pid == e.proc.group


def test_health_ok_makes_ready_and_fires_all_joined_starts() -> None:
    """A 200 probe -> ready; concurrent starts join one spawn and fire together."""
    e = Env()
    d1, d2 = e.up.start(), e.up.start()
    assert len(e.reactor.processes) == 1
    e.prober.answer(200)
    assert result(d1) is None and result(d2) is None
    assert e.up.state is S.READY
    assert e.transitions == [(S.STOPPED, S.STARTING), (S.STARTING, S.READY)]


def test_start_of_ready_returns_at_once() -> None:
    """start() on a ready process fires synchronously without spawning again."""
    e = Env()
    e.ready()
    d = e.up.start()
    assert result(d) is None and len(e.reactor.processes) == 1


def test_check_endpoint_none_is_ready_at_spawn() -> None:
    """checkEndpoint: none -> ready right after spawn, with no probe."""
    e = Env(check_endpoint="none")
    assert result(e.up.start()) is None
    assert e.up.state is S.READY and e.prober.calls == []


def test_probe_backoff_schedule_grows_and_is_capped() -> None:
    """Failed probes are retried at 10 ms growing x1.5, capped at 50 ms early on."""
    e = Env()
    e.up.start()
    times = [e.reactor.seconds()]
    for _ in range(8):
        e.prober.refuse() if len(e.prober.calls) % 2 else e.prober.answer(503)
        n = len(e.prober.calls)
        while len(e.prober.calls) == n:
            e.reactor.advance(0.001)
        times.append(e.reactor.seconds())
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [0.01, 0.015, 0.023, 0.034]
    assert max(gaps) <= 0.051 and gaps[-1] == pytest.approx(0.05, abs=0.002)


def test_backoff_ceiling_grows_with_elapsed_time() -> None:
    """After a long start the probe interval may grow to 250 ms, never beyond."""
    assert health.next_delay(None, 0) == health.FIRST_DELAY
    assert health.next_delay(1.0, 2.0) == pytest.approx(0.1)
    assert health.next_delay(1.0, 100.0) == health.MAX_CEILING


def test_exit_while_starting_fails_at_once_with_code_and_output() -> None:
    """A premature exit fails the start naming the exit code and quoting last output."""
    e = Env()
    d = e.up.start()
    e.proc.output(b"loading model\nerror: model file not found\n", fd=2)
    e.proc.exit(1)
    err = failure(d)
    assert err.check(UpstreamStartFailed)
    msg = err.value.message
    assert "exit code 1" in msg and "error: model file not found" in msg
    assert e.up.state is S.STOPPED and e.up.last_error == msg
    assert e.transitions[-1] == (S.STARTING, S.STOPPED)
    assert e.reactor.getDelayedCalls() == []  # health deadline and probe timers cancelled


def test_exit_with_pipes_held_fails_after_drain() -> None:
    """If grandchildren hold the pipes, the group is SIGKILLed and pipes force-closed."""
    e = Env()
    d = e.up.start()
    pid = e.proc.group
    e.proc.exit(2, pipes_closed=False)
    assert (pid, signal.SIGKILL) in e.reactor.group_signals
    assert pending(d)
    e.reactor.advance(2.0)
    assert e.proc.lost and failure(d).check(UpstreamStartFailed)


def test_health_check_timeout_stops_with_grace_and_fails() -> None:
    """healthCheckTimeout fails starts with a Go-style duration and stops the process."""
    e = Env(health_check_timeout=15)
    e.reactor.ignore_term = True
    d = e.up.start()
    e.prober.answer(503)
    e.reactor.advance(15)
    err = failure(d)
    assert "health check timed out after 15s" in err.value.message
    assert "HTTP 503" in err.value.message
    assert e.up.state is S.STOPPING and e.proc.signals == ["TERM"]
    e.reactor.advance(5)
    assert e.proc.writes == [(3, b"K")]
    assert e.up.state is S.STOPPED


def test_stop_sends_term_then_kill_after_timeout() -> None:
    """Stop: TERM to the launcher (forwarded to the group), SIGKILL to the group at timeout."""
    e = Env()
    e.ready()
    e.reactor.ignore_term = True
    d = e.up.stop(3)
    assert e.up.state is S.STOPPING and e.proc.signals == ["TERM"]
    e.reactor.advance(2.9)
    assert pending(d) and e.proc.writes == []
    e.reactor.advance(0.2)
    assert result(d) is None
    assert e.proc.writes == [(3, b"K")]  # the launcher kills and reaps the tree
    assert e.up.state is S.STOPPED and e.up.pid is None
    assert e.reactor.getDelayedCalls() == []
    assert e.transitions[-2:] == [(S.READY, S.STOPPING), (S.STOPPING, S.STOPPED)]


def test_stuck_launcher_gets_group_sigkill() -> None:
    """If the launcher does not act on kill-now, SIGKILL goes to the whole group."""
    e = Env()
    e.ready()
    e.reactor.ignore_term = True
    e.reactor.launcher_stuck = True
    d = e.up.stop(1)
    e.reactor.advance(1)
    assert pending(d) and e.reactor.group_signals == []
    e.reactor.advance(2)
    assert e.reactor.group_signals[0] == (e.proc.group, signal.SIGKILL)
    assert result(d) is None and e.up.state is S.STOPPED


def test_stop_fires_only_when_reaped_and_cancels_kill_timer() -> None:
    """A child that exits on TERM completes the stop; no SIGKILL timer is left."""
    e = Env()
    e.ready()
    d = e.up.stop(10)
    assert pending(d)
    e.reactor.advance(0.5)
    assert result(d) is None
    assert e.reactor.getDelayedCalls() == []
    assert e.proc.signals == ["TERM"]


def test_stop_of_stopped_is_noop_without_event() -> None:
    """Stopping a stopped process fires at once and emits no transition."""
    e = Env()
    assert result(e.up.stop(1)) is None
    assert e.transitions == []


def test_stop_while_starting_aborts_start() -> None:
    """A stop during the health check fails the start waiters and kills the child."""
    e = Env()
    d = e.up.start()
    s = e.up.stop(1)
    assert failure(d).check(ModelUnloaded)
    assert e.up.state is S.STOPPING
    e.reactor.advance(0.5)
    assert result(s) is None and e.up.state is S.STOPPED
    assert e.reactor.getDelayedCalls() == []


def test_start_while_stopping_waits_then_starts() -> None:
    """A start during a stop waits for the stop to finish, then spawns anew (#946)."""
    e = Env()
    e.ready()
    s = e.up.stop(10)
    d = e.up.start()
    assert pending(d) and len(e.reactor.processes) == 1
    e.reactor.advance(0.5)
    assert result(s) is None
    assert len(e.reactor.processes) == 2 and e.up.state is S.STARTING
    e.prober.answer(200)
    assert result(d) is None and e.up.state is S.READY


def test_second_stop_with_shorter_timeout_brings_kill_forward() -> None:
    """A stop during stopping with a shorter timeout reschedules the SIGKILL earlier."""
    e = Env()
    e.ready()
    e.reactor.ignore_term = True
    d1 = e.up.stop(30)
    d2 = e.up.stop(1)
    e.reactor.advance(1)
    assert result(d1) is None and result(d2) is None


def test_ready_process_exiting_goes_stopped_and_next_start_respawns() -> None:
    """An unexpected exit of a ready process -> stopped; the next start spawns again."""
    e = Env()
    e.ready()
    e.proc.exit(sig=signal.SIGSEGV)
    assert e.up.state is S.STOPPED
    assert e.up.last_error is not None and "SIGSEGV" in e.up.last_error
    e.ready()
    assert len(e.reactor.processes) == 2 and e.up.state is S.READY


def test_cmd_stop_runs_with_pid_and_env() -> None:
    """cmdStop has ${PID} replaced, runs under the launcher with the model env; no TERM."""
    e = Env(cmd_stop=f"{sys.executable} -c 'kill' ${{PID}}", env=("A=1",))
    e.ready()
    leader = e.proc
    e.up.stop(5)
    stopper = e.reactor.processes[-1]
    assert stopper is not leader
    assert stopper.argv == [sys.executable, "-c", "kill", str(leader.group)]
    assert stopper.env["A"] == "1" and leader.signals == []
    stopper.exit(0)
    leader.exit(0)
    assert e.up.state is S.STOPPED


def test_unparseable_cmd_stop_falls_back_to_term() -> None:
    """A cmdStop whose executable is missing falls back to SIGTERM."""
    e = Env(cmd_stop="/nonexistent/stopper ${PID}")
    e.ready()
    e.up.stop(5)
    assert e.proc.signals == ["TERM"]


def test_missing_executable_fails_start_clearly() -> None:
    """An executable not in PATH fails the start with its name, without spawning."""
    e = Env(cmd="no-such-binary-xyz --port 1")
    err = failure(e.up.start())
    assert err.check(UpstreamStartFailed) and "no-such-binary-xyz" in err.value.message
    assert e.reactor.processes == [] and e.up.state is S.STOPPED
    assert e.transitions == [(S.STOPPED, S.STARTING), (S.STARTING, S.STOPPED)]


def test_spawn_oserror_fails_start() -> None:
    """An OSError from spawnProcess fails the start with 'failed to start command'."""
    e = Env()
    e.reactor.spawn_error = OSError(24, "Too many open files")
    err = failure(e.up.start())
    assert "failed to start command" in err.value.message and "Too many" in err.value.message


def test_shutdown_is_terminal() -> None:
    """Shutdown stops the process, enters shutdown, and later starts fail with ShuttingDown."""
    e = Env()
    e.ready()
    d = e.up.shutdown(5)
    e.reactor.advance(0.5)
    assert result(d) is None and e.up.state is S.SHUTDOWN
    assert failure(e.up.start()).check(ShuttingDown)
    assert e.transitions[-1] == (S.STOPPED, S.SHUTDOWN)
    assert result(e.up.shutdown(5)) is None


def test_shutdown_while_starting_fails_waiters_with_shutting_down() -> None:
    """Shutdown during a start fails its waiters with ShuttingDown, not ModelUnloaded."""
    e = Env()
    d = e.up.start()
    e.up.shutdown(5)
    assert failure(d).check(ShuttingDown)


def test_shutdown_fails_starts_queued_behind_a_stop() -> None:
    """Starts waiting for a stop to finish fail when shutdown arrives instead of restarting."""
    e = Env()
    e.ready()
    e.up.stop(5)
    d = e.up.start()
    sd = e.up.shutdown(5)
    e.reactor.advance(0.5)
    assert failure(d).check(ShuttingDown)
    assert result(sd) is None and len(e.reactor.processes) == 1


def test_cancelled_start_waiter_does_not_abort_start() -> None:
    """Cancelling one start Deferred leaves the start running for the others."""
    e = Env()
    d1, d2 = e.up.start(), e.up.start()
    d1.cancel()
    assert failure(d1).check(CancelledError)
    e.prober.answer(200)
    assert result(d2) is None


def test_ttl_expires_after_last_request_and_calls_on_idle() -> None:
    """on_idle fires ttl seconds after the last request finished, never while in flight."""
    e = Env(ttl=10)
    idle: list[str] = []
    e.up.on_idle = idle.append
    e.ready()
    e.reactor.advance(5)
    e.up.request_started()
    e.reactor.advance(100)
    assert idle == []
    e.up.request_finished()
    e.reactor.advance(9.9)
    assert idle == []
    e.reactor.advance(0.1)
    assert idle == ["m1"]


def test_ttl_counts_from_ready_when_never_used() -> None:
    """A model that becomes ready and gets no request expires ttl seconds after ready."""
    e = Env(ttl=3)
    idle: list[str] = []
    e.up.on_idle = idle.append
    e.ready()
    e.reactor.advance(3)
    assert idle == ["m1"]


def test_ttl_without_on_idle_stops_itself_with_unload_timeout() -> None:
    """With no on_idle the upstream stops itself, SIGKILL after unload_timeout."""
    e = Env(ttl=2, unload_timeout=4)
    e.ready()
    e.reactor.ignore_term = True
    e.reactor.advance(2)
    assert e.up.state is S.STOPPING
    e.reactor.advance(4)
    assert e.up.state is S.STOPPED


def test_ttl_zero_never_expires() -> None:
    """ttl 0 arms no timer."""
    e = Env(ttl=0)
    e.ready()
    assert e.reactor.getDelayedCalls() == []


def test_output_goes_to_buffer_sink_and_logger() -> None:
    """stdout and stderr land in the model buffer and the shared sink."""
    e = Env()
    e.up.start()
    e.proc.output(b"out\n", 1)
    e.proc.output(b"err\n", 2)
    assert e.up.logs.history() == b"out\nerr\n" == e.sink.history()


def test_raising_listener_does_not_break_transitions() -> None:
    """A state listener that raises is logged; others still hear and the state changes."""
    e = Env()
    e.up.add_state_listener(lambda *a: 1 / 0)
    e.ready()
    assert e.up.state is S.READY and e.transitions[-1] == (S.STARTING, S.READY)


def test_remove_listener() -> None:
    """The function add_state_listener returns unsubscribes."""
    e = Env()
    seen: list[S] = []
    remove = e.up.add_state_listener(lambda mid, old, new: seen.append(new))
    remove()
    e.ready()
    assert seen == []


def test_go_duration() -> None:
    """Durations print like Go's time.Duration."""
    assert go_duration(15) == "15s"
    assert go_duration(120) == "2m0s"
    assert go_duration(0.5) == "500ms"
    assert go_duration(3725) == "1h2m5s"


def test_listener_restarting_on_failure_gets_its_own_start() -> None:
    """A listener that starts again when a failed start lands in stopped is not failed with it."""
    e = Env()
    again: list[Deferred[None]] = []

    def restart(mid: str, old: S, new: S) -> None:
        if new is S.STOPPED and not again:
            again.append(e.up.start())

    e.up.add_state_listener(restart)
    first = e.up.start()
    e.proc.exit(1)
    assert failure(first).check(UpstreamStartFailed)
    assert pending(again[0]) and e.up.state is S.STARTING and len(e.reactor.processes) == 2
    e.prober.answer(200)
    assert result(again[0]) is None


def test_stop_cancels_probe_in_flight() -> None:
    """Stopping during a start cancels the probe in flight; a late answer changes nothing."""
    e = Env()
    e.up.start()
    e.up.stop(1)
    assert e.prober.cancelled == ["http://127.0.0.1:9999/health"]
    e.reactor.advance(1)
    assert e.up.state is S.STOPPED and len(e.prober.calls) == 1


def test_probe_url_joins_proxy_path_and_check_endpoint() -> None:
    """The probe URL is the proxy base (with its path) plus checkEndpoint."""
    e = Env(proxy="http://127.0.0.1:9999/base/", check_endpoint="/v1/models")
    e.up.start()
    assert e.prober.calls[0][0] == "http://127.0.0.1:9999/base/v1/models"


def test_output_probes_at_once_instead_of_waiting_for_the_timer() -> None:
    """A log line while waiting probes now; one during a probe is followed by another at once."""
    e = Env()
    e.up.start()
    e.prober.refuse()  # the next probe would wait 10 ms
    assert len(e.prober.calls) == 1
    e.proc.output(b"srv  load_model: loading model\n")
    assert len(e.prober.calls) == 2  # no time passed
    e.proc.output(b"more\n")
    e.proc.output(b"and more\n")  # two lines while that probe is in flight: one follow-up
    e.prober.answer(503)
    assert len(e.prober.calls) == 3
    e.prober.answer(200)
    assert e.up.state is S.READY and e.reactor.seconds() == 0
    e.proc.output(b"main: server is listening\n")  # ready: no more probes
    assert len(e.prober.calls) == 3
