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
