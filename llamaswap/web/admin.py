"""llamaswap's admin endpoints (SPEC 5.3-5.5, 5.9): running models, unload, profiles, version.

The resources do not check API keys: the root resource does that before dispatching
(SPEC 6). Each one looks up the current App through ``get_app`` on every request, so a
config reload (a new App) takes effect at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.runtime import seconds
from twisted.web.resource import Resource
from twisted.web.server import Request

from llamaswap.errors import BadRequest, ModelNotFound
from llamaswap.process.state import ProcessState
from llamaswap.web.admin_base import AdminResource, Handler, write_text
from llamaswap.web.app import App
from llamaswap.web.listing import ModelsResource
from llamaswap.web.names import name_index
from llamaswap.web.render import render_error, write_json

log = Logger(namespace="llamaswap.web.admin")

_NOT_RUNNING = (ProcessState.STOPPED, ProcessState.SHUTDOWN)
_MAX_PROFILE_BODY = 64 * 1024


def _number(value: float) -> float | int:
    """An integral float as an int, so ``ttl`` reads ``300`` not ``300.0``."""
    return int(value) if float(value).is_integer() else value


def running_models(app: App) -> dict[str, Any]:
    """The ``/running`` body: every local process not stopped, sorted by model ID.

    Reads the router's running set, so it costs O(running), not O(configured models).
    With GPU memory figures each entry has ``memory`` (held now, measured, expected) and
    the body ``gpus`` (each GPU's total and free bytes).
    """
    memory = app.extras.get("memory")
    running = []
    for model_id in sorted(app.router.running_models()):
        upstream = app.upstreams[model_id]
        state = ProcessState(upstream.state)
        if state in _NOT_RUNNING:
            continue
        model = upstream.model
        running.append(
            {
                "model": model_id,
                "state": state.value,
                "cmd": model.cmd,
                "proxy": model.proxy,
                "ttl": _number(model.ttl),
                "name": model.name,
                "description": model.description,
            }
        )
        if memory is not None:
            running[-1]["memory"] = memory.model_view(model_id, model)
    if memory is None:
        return {"running": running}
    return {"running": running, "gpus": memory.gpus_view()}


class RunningResource(AdminResource):
    """``GET /running``."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Only the exact path."""
        return {"GET": self.render_running} if rest == "" else None

    def render_running(self, request: Request) -> bytes:
        """The running processes as JSON."""
        return write_json(request, running_models(self.get_app()))


class UnloadAllResource(AdminResource):
    """``GET /unload``: unload every local model, answer ``OK`` once all have stopped."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Only the exact path."""
        return {"GET": self.render_unload} if rest == "" else None

    def render_unload(self, request: Request) -> int:
        """Start the unload; answer when it is done."""
        waiting = maybeDeferred(self.get_app().router.unload, None, None)
        return self.respond_later(request, waiting, lambda _: write_text(request, "OK"))


class ApiUnloadResource(AdminResource):
    """``POST /api/models/unload`` (all) and ``POST /api/models/unload/<model...>``."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """The exact path unloads all; anything below names one model."""
        if rest == "":
            return {"POST": self.render_unload_all}
        if rest.startswith("/"):
            return {"POST": lambda request: self.render_unload_one(request, rest[1:])}
        return None

    def render_unload_all(self, request: Request) -> int:
        """Unload every local model, then ``{"msg":"ok"}``."""
        waiting = maybeDeferred(self.get_app().router.unload, None, None)
        return self.respond_later(request, waiting, lambda _: write_json(request, {"msg": "ok"}))

    def render_unload_one(self, request: Request, name: str) -> bytes | int:
        """Unload one model named by ID or alias (profiles do not apply), then ``OK``."""
        name = name.lstrip("/")
        app = self.get_app()
        index = name_index(app.config)
        model_id = index.local_id(app.config, name)
        if model_id is None:
            if index.peer(name) is not None:
                raise ModelNotFound("no local server found for requested model")
            raise ModelNotFound("model not found")
        waiting: Deferred[None] = maybeDeferred(app.router.unload, [model_id])
        return self.respond_later(request, waiting, lambda _: write_text(request, "OK"))


def _profile_list(app: App) -> dict[str, Any]:
    """The ``GET /api/profiles`` body."""
    profiles = []
    for name in sorted(app.config.profiles):
        profile = app.config.profiles[name]
        pins = {pin: profile.pins[pin] or "" for pin in sorted(profile.pins)}
        profiles.append({"id": name, "description": profile.description, "pins": pins})
    return {"active": app.active_profile, "profiles": profiles}


def _requested_profile(body: bytes) -> str | None:
    """The profile name a ``PUT /api/profiles/active`` body asks for (None: deactivate)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("invalid profile request") from exc
    if not isinstance(payload, dict):
        raise BadRequest("invalid profile request")
    if "name" not in payload:
        raise BadRequest("profile name is required")
    name = payload["name"]
    if name is not None and not isinstance(name, str):
        raise BadRequest("profile name must be a string or null")
    return name or None


class ProfilesResource(AdminResource):
    """``GET /api/profiles`` and ``PUT /api/profiles/active``."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """The list at the exact path, the selection at ``/active``."""
        if rest == "":
            return {"GET": self.render_list}
        if rest == "/active":
            return {"PUT": self.render_select}
        return None

    def render_list(self, request: Request) -> bytes:
        """Every profile with its pins, and which one is active."""
        return write_json(request, _profile_list(self.get_app()))

    def render_select(self, request: Request) -> bytes:
        """Activate a profile by name, or none; notify listeners when it changed."""
        body = request.content.read(_MAX_PROFILE_BODY + 1) if request.content else b""
        if len(body) > _MAX_PROFILE_BODY:
            raise BadRequest("invalid profile request")
        name = _requested_profile(body)
        app = self.get_app()
        if name is not None and name not in app.config.profiles:
            raise ModelNotFound(f'profile "{name}" not found')
        if name != app.active_profile:
            app.active_profile = name
            log.info('active profile changed to "{name}"', name=name or "")
            listener = app.extras.get("on_profile_change")
            if callable(listener):
                try:
                    listener(name)
                except Exception:
                    log.failure("on_profile_change listener failed")
        return write_json(request, {"active": name})


class VersionResource(AdminResource):
    """``GET /api/version``."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Only the exact path."""
        return {"GET": self.render_version} if rest == "" else None

    def render_version(self, request: Request) -> bytes:
        """Version, commit and build date (``unknown`` unless recorded), Python and Twisted."""
        from llamaswap.buildinfo import build_info

        return write_json(request, build_info().as_json())


class HardwareResource(AdminResource):
    """``GET /api/hardware``: the hardware snapshot detected at start."""

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Only the exact path."""
        return {"GET": self.render_hardware} if rest == "" else None

    def render_hardware(self, request: Request) -> bytes:
        """The snapshot; 503 while detection runs or when it failed."""
        info = self.get_app().extras.get("hardware")
        snapshot = getattr(info, "snapshot", None)
        if snapshot is not None:
            return write_json(request, snapshot)
        error = getattr(info, "error", None)
        reason = (f"hardware detection unavailable: {error}" if error
                  else "hardware detection unavailable: it has not finished yet, try again")
        return render_error(request, 503, reason)


def build_admin_resources(
    get_app: Callable[[], App], reactor: IReactorTime | None = None
) -> dict[str, Resource]:
    """The admin resources keyed by the path they serve (no leading slash).

    ``reactor`` supplies the clock for ``created`` in the model listing.
    """
    now: Callable[[], float] = reactor.seconds if reactor is not None else seconds
    return {
        "v1/models": ModelsResource(get_app, "v1/models", now),
        "models": ModelsResource(get_app, "models", now),
        "running": RunningResource(get_app, "running"),
        "unload": UnloadAllResource(get_app, "unload"),
        "api/models/unload": ApiUnloadResource(get_app, "api/models/unload"),
        "api/profiles": ProfilesResource(get_app, "api/profiles"),
        "api/version": VersionResource(get_app, "api/version"),
        "api/hardware": HardwareResource(get_app, "api/hardware"),
    }
