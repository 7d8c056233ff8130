"""System and GPU sampling: /proc parsing, fake NVML, the monitor's schedule and exposition."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from llamaswap.observe.gpu import MIB, NvmlReader
from llamaswap.observe.performance import PerformanceMonitor, SystemCollector
from llamaswap.observe.sysstats import SystemReader
from llamaswap.observe.types import run_inline

from .fakes import fake_nvml, make_proc

GPU0 = {
    "name": b"NVIDIA Fake 4090",
    "uuid": "GPU-0000",
    "temp": 61,
    "util": 87,
    "mem_util": 40,
    "used": 2048 * MIB,
    "total": 24576 * MIB,
    "power_mw": 312500,
    "fan": 55,
}


class LogCapture:
    """Collects log events emitted through a twisted Logger."""

    def __init__(self) -> None:
        """Start with no events."""
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=self.events.append)

    def texts(self, level: LogLevel) -> list[str]:
        """Formatted messages at ``level``."""
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e["log_level"] == level]


def scrape(monitor: PerformanceMonitor) -> dict[str, list[Any]]:
    """Samples by metric name from the monitor's collector."""
    registry = CollectorRegistry()
    registry.register(SystemCollector(monitor))
    text = generate_latest(registry).decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_system_reader_computes_core_percent_between_readings(tmp_path: Any) -> None:
    """CPU percent is the busy share of the jiffies elapsed since the previous reading."""
    root = str(tmp_path)
    make_proc(root, [(100, 100), (0, 200)])
    reader = SystemReader(root)
    reader.read(1.0)
    make_proc(root, [(175, 125), (10, 290)])
    sample = reader.read(2.0)
    assert sample.cpu_util_per_core == (75.0, 10.0)
    assert sample.mem_total_mb == 8192 and sample.mem_used_mb == 4096
    assert sample.swap_used_mb == 512
    assert (sample.load_avg_1, sample.load_avg_15) == (0.5, 2.0)
    assert [(n.name, n.bytes_recv, n.bytes_sent) for n in sample.net_io] == [
        ("eth0", 3000, 4000),
        ("lo", 100, 200),
    ]


def test_nvml_reader_reports_each_figure_and_none_for_unsupported() -> None:
    """Every GPU is read; a figure whose NVML call fails is None, not an error."""
    partial = {"name": "Old GPU", "uuid": "GPU-1", "used": MIB, "total": 2 * MIB}
    reader = NvmlReader(fake_nvml([GPU0, partial]))
    assert reader.open() == 2
    first, second = reader.read(5.0)
    assert (first.name, first.temp_c, first.gpu_util_pct, first.power_draw_w) == (
        "NVIDIA Fake 4090",
        61,
        87.0,
        312.5,
    )
    assert (first.mem_used_mb, first.mem_total_mb, first.fan_speed_pct) == (2048, 24576, 55)
    assert second.temp_c is None and second.fan_speed_pct is None and second.mem_used_mb == 1


def test_monitor_samples_every_interval_and_exports_gpu_series(tmp_path: Any) -> None:
    """The LoopingCall samples at start and each interval; GPU gauges carry id/name/uuid labels."""
    make_proc(str(tmp_path), [(1, 1)])
    clock = Clock()
    nvml = fake_nvml([GPU0])
    monitor = PerformanceMonitor(
        clock=clock,
        every=5,
        run_in_thread=run_inline,
        system=SystemReader(str(tmp_path)),
        nvml_loader=lambda: nvml,
    )
    monitor.start()
    assert len(monitor.sys_stats) == 1 and len(monitor.gpu_stats) == 1
    clock.advance(5)
    assert len(monitor.gpu_stats) == 2
    series = scrape(monitor)
    (temp,) = series["llamaswap_gpu_temperature_celsius"]
    assert temp.value == 61 and temp.labels == {
        "id": "0",
        "name": "NVIDIA Fake 4090",
        "uuid": "GPU-0000",
    }
    assert series["llamaswap_gpu_memory_total_bytes"][0].value == 24576 * MIB
    assert series["llamaswap_gpu_power_draw_watts"][0].value == 312.5
    assert "llamaswap_gpu_vram_temperature_celsius" not in series
    assert series["llamaswap_memory_total_bytes"][0].value == 8192 * MIB
    loads = {s.labels["interval"]: s.value for s in series["llamaswap_load_average"]}
    assert loads == {"1m": 0.5, "5m": 1.25, "15m": 2.0}
    recv = [s for s in series["llamaswap_network_bytes_total"] if s.labels["direction"] == "recv"]
    assert {s.labels["interface"]: s.value for s in recv} == {"eth0": 3000, "lo": 100}
    monitor.stop()
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]
    clock.advance(5)
    assert len(monitor.gpu_stats) == 2


def test_history_is_bounded_to_one_hour() -> None:
    """At most 3600/every samples are kept."""
    clock = Clock()
    monitor = PerformanceMonitor(
        clock=clock,
        every=600,
        run_in_thread=run_inline,
        nvml_loader=lambda: fake_nvml([GPU0]),
    )
    monitor.start()
    clock.pump([600] * 10)
    assert len(monitor.gpu_stats) == 6
    monitor.stop()


def test_no_nvml_library_means_no_gpu_series_and_one_log_line(tmp_path: Any) -> None:
    """Without pynvml, GPU series are absent and a single line says why, not one per sample."""
    make_proc(str(tmp_path), [(1, 1)])
    clock, logs = Clock(), LogCapture()

    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    monitor = PerformanceMonitor(
        clock=clock,
        every=5,
        run_in_thread=run_inline,
        system=SystemReader(str(tmp_path)),
        nvml_loader=missing,
        log=logs.log,
    )
    monitor.start()
    clock.pump([5, 5, 5])
    series = scrape(monitor)
    assert not [name for name in series if name.startswith("llamaswap_gpu_")]
    assert "llamaswap_cpu_util_percent" in series
    (line,) = logs.texts(LogLevel.info)
    assert "GPU metrics unavailable" in line and "pynvml" in line
    monitor.stop()


def test_nvml_init_failure_is_logged_once_and_sampling_goes_on(tmp_path: Any) -> None:
    """A driver-less machine (nvmlInit fails) logs the NVML error once; system figures continue."""
    make_proc(str(tmp_path), [(1, 1)])
    clock, logs = Clock(), LogCapture()
    monitor = PerformanceMonitor(
        clock=clock,
        every=5,
        run_in_thread=run_inline,
        system=SystemReader(str(tmp_path)),
        nvml_loader=lambda: fake_nvml([], init_error="Driver Not Loaded"),
        log=logs.log,
    )
    monitor.start()
    clock.advance(5)
    (line,) = logs.texts(LogLevel.info)
    assert "Driver Not Loaded" in line
    assert len(monitor.sys_stats) == 2 and not monitor.gpu_stats
    monitor.stop()


def test_found_gpus_are_announced_once() -> None:
    """With GPUs, one info line says how many are sampled; later samples log nothing."""
    clock, logs = Clock(), LogCapture()
    monitor = PerformanceMonitor(
        clock=clock, every=5, run_in_thread=run_inline,
        nvml_loader=lambda: fake_nvml([GPU0, GPU0]), log=logs.log,
    )  # fmt: skip
    monitor.start()
    clock.pump([5, 5])
    assert logs.texts(LogLevel.info) == ["GPU metrics: 2 NVIDIA GPU(s) sampled through NVML"]
    monitor.stop()


def test_stop_waits_for_the_sample_in_progress_before_releasing_nvml() -> None:
    """NVML is shut down only after a sample running in the thread has finished."""
    from twisted.internet.defer import Deferred

    jobs: list[tuple[Any, Deferred[Any]]] = []

    def deferred_runner(fn: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        jobs.append((fn, d))
        return d

    nvml = fake_nvml([GPU0])
    monitor = PerformanceMonitor(
        clock=Clock(), every=5, run_in_thread=deferred_runner, nvml_loader=lambda: nvml
    )
    monitor.start()
    fn, d = jobs.pop()
    result = fn()  # the sample runs "in the thread"
    stopped = monitor.stop()
    assert not jobs and not stopped.called
    d.callback(result)
    ((close, close_d),) = jobs
    close()
    close_d.callback(None)
    assert stopped.called and nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_out_of_open_files_skips_samples_with_one_warning_a_minute(tmp_path: Any) -> None:
    """/proc unreadable for want of descriptors: samples are skipped, warned once a minute, no
    traceback; sampling resumes when files can be opened again."""
    make_proc(str(tmp_path), [(1, 1)])
    reader = SystemReader(str(tmp_path))
    real_read = reader.read
    state = {"exhausted": True}

    def read(now: float) -> Any:
        if state["exhausted"]:
            raise OSError(24, "Too many open files", str(tmp_path / "stat"))
        return real_read(now)

    reader.read = read  # type: ignore[method-assign]
    clock, logs = Clock(), LogCapture()
    monitor = PerformanceMonitor(
        clock=clock, every=5, run_in_thread=run_inline, system=reader,
        nvml_loader=lambda: fake_nvml([]), log=logs.log,
    )  # fmt: skip
    monitor.start()
    clock.pump([5] * 24)  # two minutes
    warnings = logs.texts(LogLevel.warn)
    assert len(warnings) == 3 and "Too many open files" in warnings[0]
    assert "(25 skipped so far)" in warnings[-1]
    assert not [e for e in logs.events if e.get("log_failure") is not None]
    assert not monitor.sys_stats
    state["exhausted"] = False
    clock.advance(5)
    assert len(monitor.sys_stats) == 1
    monitor.stop()
