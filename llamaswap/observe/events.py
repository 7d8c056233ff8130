"""``GET /api/events``: the UI's server-sent event stream (SPEC §5.10) plus a ``queue`` event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.observe.streaming import BoundedStream
from llamaswap.observe.webutil import ObserveResource
from llamaswap.web.render import render_error

_log = Logger()
MAX_MESSAGES = 1024
Subscriber = Callable[[str, Any], None]


@attrs.frozen
class Encoded:
    """An event payload already encoded as JSON text (``frame`` sends it as it is)."""

    text: str


def frame(event_type: str, payload: Any) -> bytes:
    """One SSE message: ``data`` is the payload JSON-encoded into a string (double-encoded)."""
    data = payload.text if isinstance(payload, Encoded) else json.dumps(payload)
    body = json.dumps({"type": event_type, "data": data})
    return b"event:message\ndata:" + body.encode() + b"\n\n"


class EventHub:
    """Fan-out of (type, payload) events to every open /api/events connection."""

    def __init__(self) -> None:
        """No subscribers yet."""
        self._subs: list[Subscriber] = []

    def subscribe(self, cb: Subscriber) -> Callable[[], None]:
        """Call ``cb(type, payload)`` for every event until unsubscribed."""
        self._subs.append(cb)
        return lambda: self._subs.remove(cb) if cb in self._subs else None

    def has_subscribers(self) -> bool:
        """True while at least one /api/events connection is open."""
        return bool(self._subs)

    def publish(self, event_type: str, payload: Any) -> None:
        """Send one event to every subscriber (a failing one is logged)."""
        for cb in list(self._subs):
            try:
                cb(event_type, payload)
            except Exception:
                _log.failure("event subscriber failed")


def model_status(app: Any) -> list[dict[str, Any]]:
    """Local models sorted by id with their state, then one entry per peer model.

    With GPU memory figures each local model has ``memory`` (held now, measured, expected).
    """
    memory = app.extras.get("memory")
    out: list[dict[str, Any]] = []
    for model_id in sorted(app.config.models):
        model = app.config.models[model_id]
        state = _state_of(app, model_id)
        entry: dict[str, Any] = {
            "id": model_id,
            "name": model.name,
            "description": model.description,
            "state": state,
            "unlisted": model.unlisted,
            "peerID": "",
        }
        if model.aliases:
            entry["aliases"] = list(model.aliases)
        if model.capabilities.context > 0:
            entry["context_length"] = model.capabilities.context
        if memory is not None:
            entry["memory"] = memory.model_view(model_id, model)
        out.append(entry)
    for peer_id, peer in app.config.peers.items():
        for name in peer.models:
            out.append(
                {"id": f"{peer_id}/{name}", "name": "", "description": "", "state": "",
                 "unlisted": False, "peerID": peer_id}
            )  # fmt: skip
    return out


def _state_of(app: Any, model_id: str) -> str:
    """The state ``model_status`` shows for a local model."""
    return str(getattr(getattr(app.upstreams.get(model_id), "state", None), "value", "stopped"))


@attrs.frozen
class StatusPlan:
    """``model_status`` of one config, encoded once with a hole for each model's state.

    Entries are ``(head, tail, model_id)`` (the JSON around the state value) or
    ``(text, "", None)`` for peer models, whose entries never change.
    """

    config: Any
    entries: tuple[tuple[str, str, str | None], ...]

    @classmethod
    def build(cls, app: Any) -> StatusPlan:
        """Encode every entry of ``model_status(app)``."""
        entries: list[tuple[str, str, str | None]] = []
        local = len(app.config.models)
        for i, entry in enumerate(model_status(app)):
            if i >= local:
                entries.append((json.dumps(entry), "", None))
                continue
            rest = dict(entry)
            first = {key: rest.pop(key) for key in ("id", "name", "description")}
            del rest["state"]
            rest.pop("memory", None)  # changes with every sample: filled in by render
            head = json.dumps(first)[:-1] + ', "state": '
            entries.append((head, ", " + json.dumps(rest)[1:], entry["id"]))
        return cls(app.config, tuple(entries))

    def render(self, app: Any) -> Encoded:
        """The current ``model_status(app)`` as JSON text, states (and GPU memory) filled in."""
        memory = app.extras.get("memory")
        if memory is None or not memory.sample.devices:  # no GPU figures: nothing to add
            parts = [
                head if model_id is None else head + json.dumps(_state_of(app, model_id)) + tail
                for head, tail, model_id in self.entries
            ]
        else:
            models = app.config.models
            parts = [
                head if model_id is None else
                head + json.dumps(_state_of(app, model_id)) + ', "memory": '
                + json.dumps(memory.model_view(model_id, models[model_id])) + tail
                for head, tail, model_id in self.entries
            ]
        return Encoded("[" + ", ".join(parts) + "]")


def model_status_json(app: Any) -> Encoded:
    """``model_status(app)`` encoded, from a plan built once per config."""
    plan = app.extras.get("status_plan")
    if not isinstance(plan, StatusPlan) or plan.config is not app.config:
        plan = StatusPlan.build(app)
        app.extras["status_plan"] = plan
    return plan.render(app)


def routing_view(config: Any) -> dict[str, Any]:
    """What may run together, for the UI: router and scheduler names, groups, matrix sets."""
    routing = config.routing
    settings = routing.router.settings
    groups = []
    for group in (settings.get("groups") or {}).values():
        if not group.members:
            continue
        groups.append({"id": group.id, "swap": group.swap, "exclusive": group.exclusive,
                       "persistent": group.persistent, "members": list(group.members)})
    matrix = settings.get("matrix")
    view: dict[str, Any] = {"router": routing.router.use, "scheduler": routing.scheduler.use,
                            "groups": groups}
    if routing.router.use == "matrix" and matrix is not None:
        view["matrix"] = {"sets": [list(pair) for pair in matrix.sets]}
    return view


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class EventsResource(ObserveResource):
    """Streams the initial burst, then live events, until the client or the App goes away."""

    def render_GET(self, request: Request) -> bytes | int:
        """Open an event stream."""
        app = self._get_app()
        obs = app.extras.get("observability")
        if obs is None:
            return render_error(request, 503, "events not available")
        for name, value in (
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"connection", b"keep-alive"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-accel-buffering", b"no"),
        ):
            request.setHeader(name, value)
        stream = BoundedStream(request, max_bytes=64 * 1024 * 1024, max_items=MAX_MESSAGES,
                               marker=None)  # fmt: skip

        def send(event_type: str, payload: Any) -> None:
            stream.write(frame(event_type, payload))

        send("logData", {"source": "proxy", "data": _text(app.proxy_log.history())})
        send("logData", {"source": "upstream", "data": _text(app.upstream_log.history())})
        send("modelStatus", model_status_json(app))
        memory = app.extras.get("memory")
        if memory is not None:
            send("memory", {"gpus": memory.gpus_view()})
        send("uiConfig", {"activity": {"session_id": list(app.config.ui.session_id_headers)},
                          "routing": routing_view(app.config)})
        send("profileChanged", {"active": app.active_profile})
        send("inflight", obs.inflight.snapshot())
        queue = obs.queue_snapshot()
        if queue is not None:
            send("queue", queue)
        for source, log in (("proxy", app.proxy_log), ("upstream", app.upstream_log)):
            stream.on_close(
                log.subscribe(
                    lambda data, s=source: send("logData", {"source": s, "data": _text(data)})
                )
            )
        stream.on_close(obs.hub.subscribe(send))
        obs.track(stream)
        return NOT_DONE_YET
