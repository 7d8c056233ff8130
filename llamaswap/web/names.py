"""Model name resolution shared by every route (SPEC 5.2, 5.7, 2.9-2.11, 8).

A requested name goes through, in order: the active profile's pins (exact name),
selectors (a target chosen by strategy), local model IDs and aliases, then peer
models (``<peer>/<model>`` or a bare name only one peer lists). Everything here is
pure lookups on the App's config and process states; the per-config name index is
built once and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, AnyStr
from urllib.parse import unquote, unquote_to_bytes

import attrs

from llamaswap.config.model import Config
from llamaswap.errors import BadRequest, LlamaSwapError, ModelNotFound
from llamaswap.process.state import ProcessState
from llamaswap.web.selectors import SelectorRuntime

if TYPE_CHECKING:
    from llamaswap.web.app import App

NO_MODEL = "no model id could be identified"
NO_ROUTER = "no router for requested model"
MODEL_NOT_FOUND = "model not found"

_RUNTIME_KEY = "selector_runtime"


def _noop() -> None:
    """Release nothing."""


@attrs.frozen
class NameIndex:
    """Every name a config makes addressable, for O(1) lookups."""

    aliases: Mapping[str, str]
    peer_fqns: Mapping[str, tuple[str, str]]
    peer_bare: Mapping[str, tuple[str, str]]

    @classmethod
    def build(cls, config: Config) -> NameIndex:
        """Index the local aliases and the peer namespace of ``config``."""
        aliases: dict[str, str] = {}
        for model in config.models.values():
            for alias in model.aliases:
                aliases.setdefault(alias, model.id)
        aliases.update(config.aliases)
        fqns: dict[str, tuple[str, str]] = {}
        listed_by: dict[str, list[tuple[str, str]]] = {}
        for peer in config.peers.values():
            for model_name in dict.fromkeys(peer.models):
                fqns[f"{peer.id}/{model_name}"] = (peer.id, model_name)
                listed_by.setdefault(model_name, []).append((peer.id, model_name))
        bare = {
            name: owners[0]
            for name, owners in listed_by.items()
            if len(owners) == 1 and name not in fqns
        }
        return cls(aliases=aliases, peer_fqns=fqns, peer_bare=bare)

    def local_id(self, config: Config, name: str) -> str | None:
        """The local model ID for a model ID or alias, else None."""
        if name in config.models:
            return name
        return self.aliases.get(name)

    def peer(self, name: str) -> tuple[str, str] | None:
        """``(peer_id, peer_model)`` for a peer FQN or unique bare name, else None."""
        return self.peer_fqns.get(name) or self.peer_bare.get(name)


_index_cache: dict[int, tuple[Config, NameIndex]] = {}


def name_index(config: Config) -> NameIndex:
    """The (cached) NameIndex of ``config``."""
    cached = _index_cache.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    index = NameIndex.build(config)
    if len(_index_cache) >= 8:
        _index_cache.clear()
    _index_cache[id(config)] = (config, index)
    return index


@attrs.define(eq=False)
class Resolved:
    """Where a requested name leads, and the name the forwarded request should carry.

    ``kind`` is "local", "peer", "selector" (a selector that could not choose a
    target; ``error`` says why) or "unknown". ``original`` is what the client asked
    for, ``requested`` the name after pins and selectors (filters key on it),
    ``model_id`` the local model ID (the requested name for peers and unknowns).
    Call ``release()`` once the request has ended (spillover accounting).
    """

    kind: str
    requested: str
    original: str
    model_id: str
    peer_id: str | None = None
    peer_model: str | None = None
    selector_id: str | None = None
    pinned: bool = False
    error: LlamaSwapError | None = None
    _release: Callable[[], None] = _noop

    @property
    def rewritten(self) -> bool:
        """True when the request's model name must be replaced by ``requested``."""
        return self.requested != self.original

    @property
    def peer(self) -> str | None:
        """The peer ID for a peer model (same as ``peer_id``), else None."""
        return self.peer_id

    @property
    def peer_fqn(self) -> str | None:
        """``<peer>/<model>`` for a peer model, else None."""
        if self.peer_id is None or self.peer_model is None:
            return None
        return f"{self.peer_id}/{self.peer_model}"

    def release(self) -> None:
        """End this request's selector accounting (idempotent; no-op unless spillover)."""
        release, self._release = self._release, _noop
        release()


def selector_runtime(app: App) -> SelectorRuntime:
    """The App's spillover counters (created on first use; a new App starts afresh)."""
    runtime = app.extras.get(_RUNTIME_KEY)
    if not isinstance(runtime, SelectorRuntime):
        runtime = SelectorRuntime()
        app.extras[_RUNTIME_KEY] = runtime
    return runtime


def model_state(app: App, model_id: str) -> ProcessState:
    """The process state of a local model (stopped when it has no upstream)."""
    upstream = app.upstreams.get(model_id)
    if upstream is None:
        return ProcessState.STOPPED
    return ProcessState(upstream.state)


def active_pins(app: App) -> Mapping[str, str]:
    """The pins of the active profile (empty when none is active)."""
    if app.active_profile is None:
        return {}
    profile = app.config.profiles.get(app.active_profile)
    return profile.pins if profile is not None else {}


def _direct(app: App, index: NameIndex, original: str, name: str, pinned: bool) -> Resolved:
    """Resolve ``name`` as a local model, then a peer model, else unknown."""
    local = index.local_id(app.config, name)
    if local is not None:
        return Resolved("local", name, original, local, pinned=pinned)
    peer = index.peer(name)
    if peer is not None:
        return Resolved(
            "peer", name, original, name, peer_id=peer[0], peer_model=peer[1], pinned=pinned
        )
    message = NO_MODEL if name == "" else NO_ROUTER
    return Resolved("unknown", name, original, name, pinned=pinned, error=ModelNotFound(message))


def resolve_requested(app: App, name: str) -> Resolved:
    """Resolve a requested model name: profile pin, selector, local, peer, else unknown."""
    config = app.config
    index = name_index(config)
    pins = active_pins(app)
    pinned = name in pins
    target = pins[name] if pinned else name
    if target == "":
        return Resolved("unknown", "", name, "", pinned=pinned, error=ModelNotFound(NO_MODEL))
    selector = config.selectors.get(target)
    if selector is None:
        return _direct(app, index, name, target, pinned)

    def state_of(candidate: str) -> ProcessState | None:
        """State of a local target; None for peers."""
        local = index.local_id(config, candidate)
        return None if local is None else model_state(app, local)

    try:
        chosen, release = selector_runtime(app).choose(selector, state_of)
    except LlamaSwapError as error:
        return Resolved(
            "selector", target, name, target, selector_id=selector.id, pinned=pinned, error=error
        )
    resolved = _direct(app, index, name, chosen, pinned)
    resolved.selector_id = selector.id
    resolved._release = release
    if resolved.kind == "unknown":
        release()
        resolved.error = BadRequest(
            f'selector "{selector.id}" target "{chosen}" is not a known model'
        )
    return resolved


def _decode(segment: str | bytes) -> str:
    """A percent-decoded path segment as text."""
    if isinstance(segment, bytes):
        return unquote_to_bytes(segment).decode("utf-8", "replace")
    return unquote(segment)


def resolve_upstream_path(
    app: App, path_segments: Sequence[AnyStr]
) -> tuple[Resolved, list[AnyStr]]:
    """Longest-prefix match of ``/upstream/`` path segments (raw, percent-encoded).

    Pins of the active profile apply first (longest pin prefix); then model IDs,
    aliases, peer FQNs and unique bare peer names (longest prefix; local wins on a
    tie). Selectors are not accepted. Returns the resolution (``original`` is the
    matched name, for redirects) and the remaining raw segments, untouched.
    Not found: kind "unknown" with a 404 ``model not found`` error.
    """
    config = app.config
    index = name_index(config)
    pins = active_pins(app)
    decoded = [_decode(s) for s in path_segments]
    prefixes = ["/".join(decoded[:k]) for k in range(len(decoded) + 1)]
    if pins:
        for k in range(len(decoded), 0, -1):
            name = prefixes[k]
            if name in pins:
                resolved = _direct(app, index, name, pins[name], pinned=True)
                if resolved.kind == "unknown":
                    resolved.error = ModelNotFound(MODEL_NOT_FOUND)
                return resolved, list(path_segments[k:])
    for k in range(len(decoded), 0, -1):
        name = prefixes[k]
        if index.local_id(config, name) is not None or index.peer(name) is not None:
            return _direct(app, index, name, name, pinned=False), list(path_segments[k:])
    joined = prefixes[-1]
    return (
        Resolved("unknown", joined, joined, joined, error=ModelNotFound(MODEL_NOT_FOUND)),
        [],
    )


def resolve_local(app: App, name: str) -> Resolved:
    """Resolve a name through model IDs and aliases only, then peers (no pins, no selectors)."""
    return _direct(app, name_index(app.config), name, name, pinned=False)
