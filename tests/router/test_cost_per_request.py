"""Per-request work in the Router and the built-in plugins does not grow with the config.

A router over 10,000 configured models counts every read of an upstream's state and every
walk over the models mapping while requests are served, swapped and unloaded: a path that
touches every configured model (as ``running_models`` once did) reads 10,000 states per
request and fails here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from twisted.internet.task import Clock

from llamaswap.config.model import ModelConfig
from llamaswap.process.state import ProcessState
from llamaswap.router import builtin
from llamaswap.router.base import Grant, Router

from .fakes import FakeUpstream

MODELS = 10_000
# State reads one request may make, whatever the number of configured models.
READS_PER_REQUEST = 8


class Counter:
    """How often configured models were touched."""

    def __init__(self) -> None:
        self.state_reads = 0
        self.walks = 0


class CountingUpstream(FakeUpstream):
    """A FakeUpstream that counts reads of its ``state``."""

    def __init__(self, model: ModelConfig, counter: Counter) -> None:
        self.counter = counter
        self._state = ProcessState.STOPPED
        super().__init__(model)

    @property
    def state(self) -> ProcessState:
        """The state, counted."""
        self.counter.state_reads += 1
        return self._state

    @state.setter
    def state(self, value: ProcessState) -> None:
        self._state = value


class CountingModels(Mapping[str, ModelConfig]):
    """The models mapping plugins receive; counts walks over every key."""

    def __init__(self, models: dict[str, ModelConfig], counter: Counter) -> None:
        self.models = models
        self.counter = counter

    def __getitem__(self, key: str) -> ModelConfig:
        return self.models[key]

    def __iter__(self) -> Iterator[str]:
        self.counter.walks += 1
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)


def big_router(scheduler: str, swapper: str) -> tuple[Router, dict[str, CountingUpstream],
                                                       Counter]:
    """A Router over 10,000 counting upstreams, with the named built-in plugins."""
    counter = Counter()
    plain = {f"m{i}": ModelConfig(id=f"m{i}") for i in range(MODELS)}
    models = CountingModels(plain, counter)
    ups = {m: CountingUpstream(cfg, counter) for m, cfg in plain.items()}
    settings: dict[str, Any] = {}
    if swapper == "matrix":
        settings = {"matrix": {"sets": {"pair": "m0 & m1", "alone": "m2 | m9999"}}}
    built = getattr(builtin, swapper).build(settings=settings, models=models)
    router = Router(name=swapper, upstreams=ups,
                    scheduler_factory=getattr(builtin, scheduler), swapper=built,
                    settings={}, models=models, reactor=Clock())
    counter.state_reads = counter.walks = 0
    return router, ups, counter


def serve(router: Router, model: str) -> None:
    """One request for ``model``, granted and finished."""
    granted: list[Grant] = []
    router.request(model).addCallback(granted.append)
    assert granted, f"{model} was not granted"
    granted[0].done()


@pytest.mark.parametrize("scheduler,swapper", [
    ("fifo", "group"), ("fifo", "matrix"), ("serial", "group"),
])
def test_requests_read_a_bounded_number_of_states(scheduler: str, swapper: str) -> None:
    """Serving, swapping and unloading with 10,000 models reads O(1) states per request."""
    router, _, counter = big_router(scheduler, swapper)
    requests = 0
    for model in ("m0", "m1", "m2", "m0"):  # swaps: starts, evictions, joins
        for _ in range(50):
            serve(router, model)
            requests += 1
    assert router.model_state("m0") is ProcessState.READY
    router.unload(["m0"])
    assert router.model_state("m0") is ProcessState.STOPPED
    serve(router, "m9999")
    requests += 1
    assert counter.walks == 0
    assert counter.state_reads <= READS_PER_REQUEST * requests, (
        f"{counter.state_reads} state reads for {requests} requests")


def test_running_models_follows_state_changes() -> None:
    """The running set is kept from the upstreams' transitions, crashes included."""
    router, ups, _ = big_router("fifo", "group")
    assert router.running_models() == {}
    serve(router, "m5")
    assert router.running_models() == {"m5": ProcessState.READY}
    ups["m5"]._set(ProcessState.STOPPED)  # the process died
    assert router.running_models() == {}
    serve(router, "m7")
    ups["m7"]._set(ProcessState.STOPPING)
    assert router.running_models() == {"m7": ProcessState.STOPPING}
