"""Small fakes with the Router/Upstream API, and an App builder, for the webapi tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from llamaswap.config.model import Config, ModelConfig
from llamaswap.process.state import ProcessState
from llamaswap.web.admin import build_admin_resources
from llamaswap.web.app import App
from llamaswap.web.auth import authorize, render_unauthorized


@attrs.define
class FakeUpstream:
    """An Upstream with only what the admin endpoints read."""

    model: ModelConfig
    state: ProcessState = ProcessState.STOPPED

    @property
    def model_id(self) -> str:
        """The model's ID."""
        return self.model.id


@attrs.define(slots=False)
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

    def running_models(self) -> dict[str, ProcessState]:
        """The upstreams whose process is starting, ready or stopping."""
        return {k: u.state for k, u in self.upstreams.items() if u.state.is_running()}

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


class MiniRoot(Resource):
    """A tiny stand-in for the web engineer's root: auth, then dispatch by path key."""

    isLeaf = True

    def __init__(self, get_app: Callable[[], App], resources: Mapping[str, Resource]) -> None:
        """Dispatch to ``resources`` keyed by path (longest key wins)."""
        super().__init__()
        self.get_app = get_app
        self.resources = resources

    def render(self, request: Request) -> bytes | int:
        """401 without a valid key, 404 for unknown paths, else the mounted resource."""
        path = request.path.decode()
        for key in sorted(self.resources, key=len, reverse=True):
            if path == "/" + key or path.startswith("/" + key + "/"):
                if not authorize(request, self.get_app().config.api_keys):
                    return render_unauthorized(request)
                return self.resources[key].render(request)
        request.setResponseCode(404)
        return b"404 page not found\n"


@attrs.define
class Reply:
    """What a client got back."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header ``name``, or None."""
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Client:
    """Drives a real twisted.web Site in memory (treq StubTreq), synchronously."""

    def __init__(self, app: App, reactor: Any = None) -> None:
        """Mount the admin resources of ``app`` under a MiniRoot."""
        self.app = app
        self.resources = build_admin_resources(lambda: self.app, reactor)
        self.stub = StubTreq(MiniRoot(lambda: self.app, self.resources))

    def start(self, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        """Send a request; the Deferred fires with the treq response."""
        d: Deferred[Any] = self.stub.request(method, "http://llamaswap.test" + path, **kwargs)
        self.stub.flush()
        return d

    @staticmethod
    def answered(d: Deferred[Any]) -> bool:
        """True once the response to ``d``'s request has arrived."""
        return d.called and not d.paused

    def finish(self, d: Deferred[Any]) -> Reply:
        """Read the response of a request whose answer is ready."""
        self.stub.flush()
        response = d.result if not isinstance(d.result, Failure) else d.result.raiseException()
        body_d = self.stub.content(response)
        self.stub.flush()
        return Reply(response.code, response.headers, body_d.result)

    def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        """Send a request and return the full reply."""
        return self.finish(self.start(method, path, **kwargs))
