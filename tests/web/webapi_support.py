"""Small fakes with the Router/Upstream API, and an App builder, for the webapi tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from llamaswap.config.model import Config, ModelConfig
from llamaswap.process.state import ProcessState
from llamaswap.web.app import App


@attrs.define
class FakeUpstream:
    """An Upstream with only what the admin endpoints read."""

    model: ModelConfig
    state: ProcessState = ProcessState.STOPPED

    @property
    def model_id(self) -> str:
        """The model's ID."""
        return self.model.id


@attrs.define
class FakeRouter:
    """Records unload calls; each returns a Deferred the test may fire later."""

    upstreams: dict[str, FakeUpstream]
    manual: bool = False
    calls: list[tuple[tuple[str, ...] | None, float | None]] = attrs.field(factory=list)
    pending: list[Deferred[None]] = attrs.field(factory=list)
    fail_with: Exception | None = None

    def unload(
        self, models: Sequence[str] | None = None, timeout: float | None = None
    ) -> Deferred[None]:
        """Record the call; stop the named (or all) upstreams unless ``manual``."""
        self.calls.append((None if models is None else tuple(models), timeout))
        if self.fail_with is not None:
            d: Deferred[None] = Deferred()
            d.errback(self.fail_with)
            return d
        if self.manual:
            pending: Deferred[None] = Deferred()
            self.pending.append(pending)
            return pending
        for model_id in models if models is not None else list(self.upstreams):
            self.upstreams[model_id].state = ProcessState.STOPPED
        return succeed(None)

    def snapshot(self) -> dict[str, Any]:
        """Process states, as the real Router reports them."""
        return {"processes": {k: u.state.value for k, u in self.upstreams.items()}}


def make_app(
    config: Config,
    states: Mapping[str, ProcessState] | None = None,
    active_profile: str | None = None,
    manual: bool = False,
) -> App:
    """An App over ``config`` with fake upstreams in ``states`` (default stopped)."""
    upstreams = {
        model_id: FakeUpstream(model, (states or {}).get(model_id, ProcessState.STOPPED))
        for model_id, model in config.models.items()
    }
    router = FakeRouter(upstreams, manual=manual)
    return App(
        config=config,
        router=router,  # type: ignore[arg-type]
        upstreams=upstreams,  # type: ignore[arg-type]
        proxy_log=None,  # type: ignore[arg-type]
        upstream_log=None,  # type: ignore[arg-type]
        active_profile=active_profile,
    )
