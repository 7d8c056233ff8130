"""Prometheus gauges of GPU memory per model and free memory per GPU, from the memory watch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric


class GpuMemoryCollector:
    """Exports what the App's memory watch last sampled and expects (no series without GPUs)."""

    def __init__(self, app: Any) -> None:
        """Read ``app.extras["memory"]`` and ``app.config.models`` at each scrape."""
        self._app = app

    def describe(self) -> list[Metric]:
        """Nothing up front: the series depend on what was sampled."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Per-model bytes held and expected, and each GPU's free bytes."""
        watch = self._app.extras.get("memory")
        if watch is None or not watch.sample.devices:
            return
        used = GaugeMetricFamily(
            "llamaswap_model_gpu_memory_bytes",
            "GPU memory held by a model's processes at the last sample, per GPU",
            labels=["model", "gpu"])
        expected = GaugeMetricFamily(
            "llamaswap_model_gpu_memory_expected_bytes",
            "GPU memory a model is expected to need (config, measured or estimate)",
            labels=["model", "source"])
        for model_id, model in sorted(self._app.config.models.items()):
            view = watch.model_view(model_id, model)
            for gpu, size in view["used"].items():
                used.add_metric([model_id, gpu], size)
            if view["expected"] is not None:
                expected.add_metric([model_id, view["expected_source"]], view["expected"])
        free = GaugeMetricFamily("llamaswap_gpu_memory_free_bytes",
                                 "Free GPU memory at the last sample", labels=["gpu"])
        for gpu in watch.gpus_view():
            free.add_metric([str(gpu["id"])], gpu["free"])
        yield from (used, expected, free)
