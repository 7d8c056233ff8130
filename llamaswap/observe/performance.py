"""The performance monitor: samples system and GPU figures every ``performance.every`` off the
reactor thread, keeps one hour of history, and exports the latest sample to Prometheus."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from llamaswap.observe.gpu import MIB, GpuSample, NvmlReader, load_nvml
from llamaswap.observe.sysstats import SysSample, SystemReader
from llamaswap.observe.types import RunInThread

HISTORY_SECONDS = 3600
# A sample skipped for an OS error (no open files left...) is logged at most this often.
SKIP_REPORT_EVERY = 60.0


class PerformanceMonitor:
    """Samples on a LoopingCall driven by ``clock``; each sample runs via ``run_in_thread``."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        every: float,
        run_in_thread: RunInThread,
        system: SystemReader | None = None,
        nvml_loader: Callable[[], ModuleType] = load_nvml,
        log: Logger | None = None,
    ) -> None:
        """Sample every ``every`` seconds; ``nvml_loader`` returns a pynvml-like module."""
        self._clock = clock
        self._every = every
        self._run = run_in_thread
        self._system = system if system is not None else SystemReader()
        self._nvml_loader = nvml_loader
        self._log = log if log is not None else Logger()
        size = max(1, int(HISTORY_SECONDS / every))
        self.sys_stats: deque[SysSample] = deque(maxlen=size)
        self.gpu_stats: deque[list[GpuSample]] = deque(maxlen=size)
        self._gpu: NvmlReader | None = None
        self._gpu_checked = False
        self.gpu_unavailable_reason: str | None = None
        self._loop: LoopingCall | None = None
        self._tick_d: Deferred[None] | None = None
        self.gpu_count = 0
        self._gpu_announced = False
        self.skipped = 0
        self._skip_reported = float("-inf")

    def start(self) -> None:
        """Take a sample now and then every ``every`` seconds."""
        if self._loop is not None:
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._every, now=True).addErrback(
            lambda f: self._log.failure("performance sampling stopped", f)
        )

    def stop(self) -> Deferred[None]:
        """Stop sampling; after any sample in progress, release NVML (in the thread runner)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pending = self._tick_d if self._tick_d is not None else succeed(None)
        self._tick_d = None

        def release(_: object) -> Deferred[None] | None:
            gpu, self._gpu = self._gpu, None
            if gpu is None:
                return None
            return self._run(gpu.close)

        d: Deferred[None] = Deferred()
        pending.addBoth(lambda _: d.callback(None))
        d.addCallback(release)
        d.addErrback(lambda f: self._log.failure("NVML shutdown failed", f))
        return d

    def clear(self) -> None:
        """Forget the history."""
        self.sys_stats.clear()
        self.gpu_stats.clear()

    def _tick(self) -> Deferred[None]:
        now = self._clock.seconds()
        d = self._run(lambda: self._sample(now))
        d.addCallback(self._store)
        d.addErrback(self._failed, now)
        self._tick_d = d

        def done(result: None) -> None:
            if self._tick_d is d:
                self._tick_d = None
            return result

        d.addBoth(done)
        return d

    def _failed(self, failure: Failure, now: float) -> None:
        """A sample that failed: an OS error (out of open files...) skips it, told once a while."""
        if not failure.check(OSError):
            self._log.failure("performance sample failed", failure)
            return
        self.skipped += 1
        if now - self._skip_reported < SKIP_REPORT_EVERY:
            return
        self._skip_reported = now
        self._log.warn(
            "performance sample skipped: {error} ({skipped} skipped so far)",
            error=failure.getErrorMessage(), skipped=self.skipped,
        )

    def _open_gpu(self) -> None:
        """Find NVML and the GPUs once; remember why not (blocking: in the thread)."""
        self._gpu_checked = True
        try:
            nvml = self._nvml_loader()
        except ImportError as exc:
            self.gpu_unavailable_reason = f"pynvml (nvidia-ml-py) is not importable: {exc}"
            return
        reader = NvmlReader(nvml)
        try:
            count = reader.open()
        except Exception as exc:  # NVMLError and friends: no driver, no library
            self.gpu_unavailable_reason = f"NVML could not be initialised: {exc}"
            return
        if count == 0:
            reader.close()
            self.gpu_unavailable_reason = "NVML found no NVIDIA GPU"
            return
        self._gpu = reader
        self.gpu_count = count

    def _sample(self, now: float) -> tuple[SysSample | None, list[GpuSample]]:
        if not self._gpu_checked:
            self._open_gpu()
        sys_sample = self._system.read(now) if self._system.available() else None
        gpus = self._gpu.read(now) if self._gpu is not None else []
        return sys_sample, gpus

    def _store(self, result: tuple[SysSample | None, list[GpuSample]]) -> None:
        sys_sample, gpus = result
        if sys_sample is not None:
            self.sys_stats.append(sys_sample)
        if gpus:
            self.gpu_stats.append(gpus)
        reason, self.gpu_unavailable_reason = self.gpu_unavailable_reason, None
        if reason is not None:
            self._log.info("GPU metrics unavailable: {reason}", reason=reason)
        elif self.gpu_count and not self._gpu_announced:
            self._gpu_announced = True
            self._log.info("GPU metrics: {n} NVIDIA GPU(s) sampled through NVML", n=self.gpu_count)

    def latest_gpus(self) -> list[GpuSample]:
        """The newest sample of each GPU, sorted by id."""
        return sorted(self.gpu_stats[-1], key=lambda g: g.id) if self.gpu_stats else []


_GPU_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("gpu_temperature_celsius", "temp_c", "GPU core temperature in Celsius", 1),
    ("gpu_vram_temperature_celsius", "vram_temp_c", "GPU memory temperature in Celsius", 1),
    ("gpu_util_percent", "gpu_util_pct", "GPU utilisation in percent", 1),
    ("gpu_memory_util_percent", "mem_util_pct", "GPU memory controller utilisation, percent", 1),
    ("gpu_memory_used_bytes", "mem_used_mb", "GPU memory used in bytes", MIB),
    ("gpu_memory_total_bytes", "mem_total_mb", "GPU memory total in bytes", MIB),
    ("gpu_fan_speed_percent", "fan_speed_pct", "GPU fan speed in percent", 1),
    ("gpu_power_draw_watts", "power_draw_w", "GPU power draw in watts", 1),
)


class SystemCollector:
    """A prometheus_client collector exporting the monitor's latest sample (llama-swap names)."""

    def __init__(self, monitor: PerformanceMonitor) -> None:
        """Export what ``monitor`` last sampled."""
        self._monitor = monitor

    def describe(self) -> list[Metric]:
        """Nothing up front: the series depend on what was sampled."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the system and GPU gauges of the latest sample."""
        if self._monitor.sys_stats:
            yield from self._system(self._monitor.sys_stats[-1])
        yield from self._gpus(self._monitor.latest_gpus())

    def _system(self, s: SysSample) -> Iterator[Metric]:
        cpu = GaugeMetricFamily(
            "llamaswap_cpu_util_percent", "CPU utilisation per core in percent", labels=["core"]
        )
        for core, value in enumerate(s.cpu_util_per_core):
            cpu.add_metric([str(core)], value)
        yield cpu
        for name, value, text in (
            ("memory_total_bytes", s.mem_total_mb, "Total memory in bytes"),
            ("memory_used_bytes", s.mem_used_mb, "Used memory in bytes"),
            ("memory_free_bytes", s.mem_free_mb, "Free memory in bytes"),
            ("swap_total_bytes", s.swap_total_mb, "Total swap in bytes"),
            ("swap_used_bytes", s.swap_used_mb, "Used swap in bytes"),
        ):
            yield GaugeMetricFamily(f"llamaswap_{name}", text, value=value * MIB)
        load = GaugeMetricFamily("llamaswap_load_average", "Load average", labels=["interval"])
        for interval, value in (("1m", s.load_avg_1), ("5m", s.load_avg_5), ("15m", s.load_avg_15)):
            load.add_metric([interval], value)
        yield load
        if s.net_io:
            net = CounterMetricFamily(
                "llamaswap_network_bytes",
                "Network bytes per interface and direction",
                labels=["interface", "direction"],
            )
            for nic in s.net_io:
                net.add_metric([nic.name, "recv"], nic.bytes_recv)
                net.add_metric([nic.name, "sent"], nic.bytes_sent)
            yield net

    def _gpus(self, gpus: list[GpuSample]) -> Iterator[Metric]:
        if not gpus:
            return
        for suffix, field, text, factor in _GPU_GAUGES:
            family: GaugeMetricFamily | None = None
            for g in gpus:
                value: Any = getattr(g, field)
                if value is None:
                    continue
                labels = {"id": str(g.id), "name": g.name}
                if g.uuid:
                    labels["uuid"] = g.uuid
                if family is None:
                    family = GaugeMetricFamily(
                        f"llamaswap_{suffix}", text, labels=["id", "name", "uuid"]
                    )
                family.add_metric(
                    [labels["id"], labels["name"], labels.get("uuid", "")], value * factor
                )
            if family is not None:
                yield family
