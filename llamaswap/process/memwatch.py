"""MemoryWatch: the latest GPU memory snapshot of one App's models, kept off the reactor thread.

It samples a ``MemoryProbe`` through the thread runner every ``every`` seconds and at once
when a model becomes ready or stops, remembers per model the most its processes held while
it was last ready (``measured``), and answers ``snapshot()`` at once from what it holds:
that is the ``memory`` provider the Router hands to swapper factories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from llamaswap.memory import MemorySnapshot, ModelMemory, resolve_need
from llamaswap.process.ggufest import estimate_cmd
from llamaswap.process.memprobe import MemoryProbe, ProbeSample
from llamaswap.process.state import ProcessState

__all__ = ["SAMPLE_EVERY", "MemoryWatch"]

SAMPLE_EVERY = 2.0
RunInThread = Callable[[Callable[[], Any]], Deferred[Any]]


class MemoryWatch:
    """Samples GPU memory for ``upstreams``; ``snapshot()`` never blocks."""

    def __init__(self, upstreams: Mapping[str, Any], *, clock: IReactorTime,
                 run_in_thread: RunInThread, probe: MemoryProbe, every: float = SAMPLE_EVERY,
                 previous: MemoryWatch | None = None, announce: bool = True,
                 estimate: Callable[[str], int | None] = estimate_cmd,
                 log: Logger | None = None) -> None:
        """``previous``: the watch of the App a reload replaces (its figures carry over).

        ``announce``: log once why there are no figures (when the memory router uses them).
        ``estimate``: bytes a model's ``cmd`` is expected to need, or None (read in the thread).
        """
        self._estimate = estimate
        self.upstreams = upstreams
        self.clock = clock
        self.probe = probe
        self.every = every
        self.log = log or Logger()
        self._run = run_in_thread
        self.measured: dict[str, dict[int, int]] = dict(previous.measured) if previous else {}
        self.estimates: dict[str, int] = dict(previous.estimates) if previous else {}
        self.sample = ProbeSample(unavailable="GPU memory has not been sampled yet")
        self.listeners: list[Callable[[], None]] = []
        self.measured_listeners: list[Callable[[str, dict[int, int]], None]] = []
        self._peak: dict[str, dict[int, int]] = {}
        self._ready_at: dict[str, float] = {}
        self._loop: LoopingCall | None = None
        self._busy: Deferred[None] | None = None
        self._again = False
        self._stopped = False
        self._told_unavailable = not announce
        self._undo: list[Callable[[], None]] = []

    def start(self) -> None:
        """Listen to the upstreams' states and sample now and every ``every`` seconds."""
        for upstream in self.upstreams.values():
            self._undo.append(upstream.add_state_listener(self._on_state))
        commands = {m: getattr(u.model, "cmd", "") for m, u in self.upstreams.items()}
        self._run(lambda: self._estimate_all(commands)).addCallback(self._estimated).addErrback(
            lambda f: self.log.failure("estimating GPU memory from GGUF files", f))
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.clock
        self._loop.start(self.every, now=True).addErrback(
            lambda f: self.log.failure("GPU memory sampling stopped", f))

    def stop(self) -> Deferred[None]:
        """Stop sampling; after a sample in progress, close the probe in the thread."""
        self._stopped = True
        for undo in self._undo:
            undo()
        self._undo.clear()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        pending = self._busy if self._busy is not None else succeed(None)
        closed: Deferred[None] = Deferred()
        pending.addBoth(lambda _: closed.callback(None))
        closed.addCallback(lambda _: self._run(self.probe.close))
        closed.addErrback(lambda f: self.log.failure("closing the GPU memory probe", f))
        return closed

    def refresh(self) -> Deferred[None]:
        """Take a sample now (or right after the one in progress)."""
        if self._stopped:
            return succeed(None)
        if self._busy is not None:
            self._again = True
            return self._busy
        roots = {m: u.pid for m, u in self.upstreams.items() if getattr(u, "pid", None)}
        d: Deferred[None] = self._run(lambda: self.probe.sample(roots)).addCallback(self._took)
        d.addErrback(lambda f: self.log.failure("GPU memory sample failed", f))
        self._busy = d

        def done(_: object) -> None:
            self._busy = None
            if self._again and not self._stopped:
                self._again = False
                self.refresh()

        d.addBoth(done)
        return d

    def _estimate_all(self, commands: Mapping[str, str]) -> dict[str, int]:
        """Each model's estimate (blocking: in the thread); a file that fails is skipped."""
        out: dict[str, int] = {}
        for model_id, cmd in commands.items():
            try:
                size = self._estimate(cmd)
            except Exception as error:  # a truncated or foreign file
                self.log.warn("{model}: no GGUF memory estimate: {error}", model=model_id,
                              error=error)
                continue
            if size is not None:
                out[model_id] = size
        return out

    def _estimated(self, estimates: dict[str, int]) -> None:
        self.estimates.update(estimates)

    def remember(self, figures: Mapping[str, Mapping[int, int]]) -> None:
        """Take remembered measured figures (from the activity store) for models not yet
        measured in this run."""
        for model_id, per_device in figures.items():
            if model_id in self.upstreams and model_id not in self.measured and per_device:
                self.measured[model_id] = dict(per_device)

    def snapshot(self) -> MemorySnapshot:
        """Devices and per-model figures as of the last sample, with last-used times now."""
        now = self.clock.seconds()
        sample = self.sample
        models = {}
        for model_id, upstream in self.upstreams.items():
            busy = getattr(upstream, "in_flight", 0) > 0
            last = now if busy else max(float(getattr(upstream, "last_use", 0.0)),
                                        self._ready_at.get(model_id, 0.0))
            models[model_id] = ModelMemory(
                usage=dict(sample.usage.get(model_id, {})),
                measured=self.measured.get(model_id),
                estimate=self.estimates.get(model_id),
                last_used=last,
            )
        return MemorySnapshot(now=now, devices=dict(sample.devices), models=models,
                              unavailable=sample.unavailable)

    def model_view(self, model_id: str, model: Any) -> dict[str, Any]:
        """JSON-able figures of one model: held now, measured, estimate, expected need."""
        snap_model = ModelMemory(usage=self.sample.usage.get(model_id, {}),
                                 measured=self.measured.get(model_id),
                                 estimate=self.estimates.get(model_id))
        need = resolve_need(model, snap_model, self.sample.devices.keys())
        return {
            "used": _by_device(snap_model.usage),
            "measured": None if snap_model.measured is None else _by_device(snap_model.measured),
            "estimate": snap_model.estimate,
            "expected": need.total if self.sample.devices else None,
            "expected_source": need.source,
            "devices": list(need.devices),
        }

    def gpus_view(self) -> list[dict[str, Any]]:
        """Each GPU's total and free bytes as of the last sample."""
        return [{"id": d, "total": m.total, "free": m.free}
                for d, m in sorted(self.sample.devices.items())]

    # sampling

    def _on_state(self, model_id: str, old: Any, new: Any) -> None:
        if new is ProcessState.READY:
            self._ready_at[model_id] = self.clock.seconds()
            self._peak.pop(model_id, None)
            self.refresh()
        elif new is ProcessState.STOPPED:
            self.refresh()

    def _took(self, sample: ProbeSample) -> None:
        self.sample = sample
        if sample.unavailable is not None:
            if not self._told_unavailable:
                self._told_unavailable = True
                self.log.info("GPU memory: no figures ({why}); the memory router evicts every "
                              "other model", why=sample.unavailable)
            if self._loop is not None and self._loop.running:
                self._loop.stop()  # nothing to see; state changes still ask again
        for model_id, upstream in self.upstreams.items():
            usage = sample.usage.get(model_id)
            if not usage or upstream.state is not ProcessState.READY:
                continue
            peak = dict(self._peak.get(model_id, {}))
            for device, size in usage.items():
                peak[device] = max(peak.get(device, 0), size)
            self._peak[model_id] = peak
            if self.measured.get(model_id) != peak:
                self.measured[model_id] = peak
                for cb in list(self.measured_listeners):
                    try:
                        cb(model_id, peak)
                    except Exception:
                        self.log.failure("GPU memory listener failed")
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                self.log.failure("GPU memory listener failed")


def _by_device(usage: Mapping[int, int]) -> dict[str, int]:
    return {str(d): b for d, b in sorted(usage.items())}
