"""``GET /v1/models`` and ``GET /models`` (SPEC 5.4): every addressable model, one record each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.web.server import Request

from llamaswap.config.model import Capabilities, Config, ModelConfig, SelectorConfig
from llamaswap.process.state import ProcessState
from llamaswap.web.admin_base import AdminResource, Handler
from llamaswap.web.app import App
from llamaswap.web.names import active_pins, model_state, name_index

_CAPABILITY_META_KEYS = ("architecture", "capabilities", "supported_parameters", "context_length")
_WARM = (ProcessState.READY, ProcessState.STARTING)
_RUNNING = frozenset(state for state in ProcessState if state.is_running())

LOADED = {"value": "loaded"}
UNLOADED = {"value": "unloaded"}


def _sorted_maps(value: Any) -> Any:
    """``value`` as JSON-able data, every mapping's keys sorted as Go's encoder writes maps.

    Values JSON cannot carry (e.g. YAML timestamps) become their text form.
    """
    if isinstance(value, Mapping):
        return {str(k): _sorted_maps(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted_maps(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def architecture(caps: Capabilities) -> dict[str, Any] | None:
    """The ``architecture`` object for declared modalities, or None."""
    out: dict[str, Any] = {}
    if caps.input:
        out["input_modalities"] = list(caps.input)
    if caps.output:
        out["output_modalities"] = list(caps.output)
    if caps.input and caps.output:
        out["modality"] = "+".join(caps.input) + "->" + "+".join(caps.output)
    return out or None


def capability_flags(caps: Capabilities) -> dict[str, bool] | None:
    """The true capability flags (sorted by name), or None when none apply."""
    into, out = set(caps.input), set(caps.output)
    flags = {
        "audio_speech": "text" in into and "audio" in out,
        "audio_transcriptions": "audio" in into and "text" in out,
        "function_calling": caps.tools,
        "image_generation": "text" in into and "image" in out,
        "image_to_image": "image" in into and "image" in out,
        "reranker": caps.reranker,
        "vision": "image" in into,
    }
    true = {name: True for name, on in flags.items() if on}
    return true or None


def record(
    record_id: str,
    created: int,
    llamaswap_meta: Mapping[str, Any],
    *,
    loaded: bool,
    name: str = "",
    description: str = "",
    caps: Capabilities | None = None,
) -> dict[str, Any]:
    """One listing record, keys in SPEC order, empty fields omitted."""
    rec: dict[str, Any] = {
        "id": record_id,
        "object": "model",
        "created": created,
        "owned_by": "llama-swap",
    }
    if name.strip():
        rec["name"] = name.strip()
    if description.strip():
        rec["description"] = description.strip()
    context = 0
    if caps is not None and not caps.is_empty():
        arch = architecture(caps)
        if arch is not None:
            rec["architecture"] = arch
        flags = capability_flags(caps)
        if flags is not None:
            rec["capabilities"] = flags
        if caps.tools:
            rec["supported_parameters"] = ["tools", "tool_choice"]
        if caps.context > 0:
            context = caps.context
            rec["context_length"] = context
    meta: dict[str, Any] = {}
    if llamaswap_meta:
        meta["llamaswap"] = _sorted_maps(llamaswap_meta)
    if context:
        meta["n_ctx"] = context
    rec["meta"] = meta
    rec["status"] = dict(LOADED if loaded else UNLOADED)
    return rec


def _model_meta(model: ModelConfig, internal: Mapping[str, Any]) -> dict[str, Any]:
    """The model's metadata merged with llamaswap's own keys (which win)."""
    meta = dict(model.metadata)
    if not model.capabilities.is_empty():
        for key in _CAPABILITY_META_KEYS:
            meta.pop(key, None)
    meta.update(internal)
    return meta


def model_records(app: App, model: ModelConfig, created: int) -> list[dict[str, Any]]:
    """The record of a listed local model, plus its alias records when enabled."""
    loaded = model_state(app, model.id).is_running()
    aliases = list(dict.fromkeys(model.aliases))
    internal: dict[str, Any] = {"type": "model"}
    if aliases:
        internal["aliases"] = aliases

    def make(record_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A record sharing the model's name, description, capabilities and status."""
        return record(
            record_id,
            created,
            meta,
            loaded=loaded,
            name=model.name,
            description=model.description,
            caps=model.capabilities,
        )

    records = [make(model.id, _model_meta(model, internal))]
    if app.config.include_aliases_in_list:
        alias_meta = _model_meta(model, {"type": "alias", "modelID": model.id})
        records.extend(make(alias, alias_meta) for alias in aliases if alias.strip())
    return records


def selector_record(app: App, selector: SelectorConfig, created: int) -> dict[str, Any]:
    """A selector's record; loaded when a (pin: the first) local target is warm."""
    internal: dict[str, Any] = {
        "type": "selector",
        "strategy": selector.strategy,
        "targets": list(selector.targets),
    }
    if selector.strategy == "spillover":
        internal["spillover"] = selector.spillover
    meta = {**selector.metadata, **internal}
    return record(
        selector.id,
        created,
        meta,
        loaded=selector_loaded(app, selector),
        name=selector.name,
        description=selector.description,
    )


def _peer_records(app: App, created: int) -> Iterable[dict[str, Any]]:
    """One record per configured peer model, by FQN, always unloaded."""
    for peer in app.config.peers.values():
        for model_name in dict.fromkeys(peer.models):
            yield record(
                f"{peer.id}/{model_name}",
                created,
                {"type": "peer", "peerID": peer.id},
                loaded=False,
                name=f"{peer.id}: {model_name}",
            )


def _pin_records(app: App, created: int) -> Iterable[dict[str, Any]]:
    """Records for active pins whose names are not already addressable."""
    config = app.config
    index = name_index(config)
    for pin, target in active_pins(app).items():
        if not target:
            continue
        if index.local_id(config, pin) is not None or index.peer(pin) is not None:
            continue
        if pin in config.selectors:
            continue
        yield record(pin, created, {"type": "profile"}, loaded=False)


def list_models(app: App, created: int) -> dict[str, Any]:
    """The whole ``/v1/models`` body, records sorted byte-wise by id."""
    config = app.config
    records: list[dict[str, Any]] = []
    for model in config.models.values():
        if not model.unlisted:
            records.extend(model_records(app, model, created))
    records.extend(_peer_records(app, created))
    for selector in config.selectors.values():
        if not selector.unlisted:
            records.append(selector_record(app, selector, created))
    records.extend(_pin_records(app, created))
    records.sort(key=lambda r: r["id"].encode("utf-8", "surrogatepass"))
    return {"object": "list", "data": records}


def selector_loaded(app: App, selector: SelectorConfig) -> bool:
    """Whether a selector lists as loaded: a (pin: the first) local target is warm."""
    index = name_index(app.config)
    targets = selector.targets[:1] if selector.strategy == "pin" else selector.targets
    for target in targets:
        local = index.local_id(app.config, target)
        if local is not None and model_state(app, local) in _WARM:
            return True
    return False


@attrs.frozen
class _Entry:
    """One listing record, encoded once, with holes for ``created`` and its status.

    ``model_id`` (a local model) or ``selector`` says where the status comes from; with
    neither the record is always unloaded.
    """

    head: bytes
    tail: bytes
    model_id: str | None = None
    selector: SelectorConfig | None = None


def _encode_entry(rec: Mapping[str, Any], **source: Any) -> _Entry:
    """Split ``rec``'s JSON (as ``json.dumps`` writes it) around ``created`` and status."""
    rest = dict(rec)
    del rest["created"], rest["status"]
    first = {"id": rest.pop("id"), "object": rest.pop("object")}
    head = json.dumps(first)[:-1] + ', "created": '
    tail = ", " + json.dumps(rest)[1:-1] + ', "status": {"value": "'
    return _Entry(head.encode(), tail.encode(), **source)


@attrs.frozen
class ListingPlan:
    """The ``/v1/models`` records of one config and active profile, encoded once.

    Only ``created`` and each record's loaded/unloaded status change between requests,
    so a request costs one state lookup per record and a byte join.
    """

    config: Config
    active_profile: str | None
    entries: tuple[_Entry, ...]

    @classmethod
    def build(cls, app: App) -> ListingPlan:
        """Encode every record ``list_models`` would list for ``app`` now."""
        config = app.config
        entries: list[tuple[bytes, _Entry]] = []

        def add(rec: Mapping[str, Any], **source: Any) -> None:
            key = rec["id"].encode("utf-8", "surrogatepass")
            entries.append((key, _encode_entry(rec, **source)))

        for model in config.models.values():
            if not model.unlisted:
                for rec in model_records(app, model, 0):
                    add(rec, model_id=model.id)
        for rec in _peer_records(app, 0):
            add(rec)
        for selector in config.selectors.values():
            if not selector.unlisted:
                add(selector_record(app, selector, 0), selector=selector)
        for rec in _pin_records(app, 0):
            add(rec)
        entries.sort(key=lambda pair: pair[0])
        return cls(config, app.active_profile, tuple(entry for _, entry in entries))

    def render(self, app: App, created: int) -> bytes:
        """The listing body, byte for byte what ``json.dumps(list_models(...))`` gives."""
        stamp = str(created).encode()
        upstreams = app.upstreams
        parts = [b'{"object": "list", "data": [']
        for i, e in enumerate(self.entries):
            if e.model_id is not None:
                upstream = upstreams.get(e.model_id)
                loaded = upstream is not None and upstream.state in _RUNNING
            elif e.selector is not None:
                loaded = selector_loaded(app, e.selector)
            else:
                loaded = False
            parts += (b", " if i else b"", e.head, stamp, e.tail,
                      b'loaded"}}' if loaded else b'unloaded"}}')
        parts.append(b"]}\n")
        return b"".join(parts)


_PLAN_KEY = "listing_plan"


def listing_plan(app: App) -> ListingPlan:
    """The App's ListingPlan, built on first use and again when the active profile changed."""
    plan = app.extras.get(_PLAN_KEY)
    if (not isinstance(plan, ListingPlan) or plan.config is not app.config
            or plan.active_profile != app.active_profile):
        plan = ListingPlan.build(app)
        app.extras[_PLAN_KEY] = plan
    return plan


class ModelsResource(AdminResource):
    """``GET /v1/models`` / ``GET /models``."""

    def __init__(self, get_app: Callable[[], App], path: str, now: Callable[[], float]) -> None:
        """Serve the listing at ``path``; ``now`` gives the Unix time for ``created``."""
        super().__init__(get_app, path)
        self.now = now

    def routes(self, rest: str) -> Mapping[str, Handler] | None:
        """Only the exact path, GET (and HEAD)."""
        return {"GET": self.render_listing} if rest == "" else None

    def render_listing(self, request: Request) -> bytes:
        """The listing, echoing ``Origin`` in ``Access-Control-Allow-Origin``."""
        origin = request.getHeader(b"origin")
        if origin:
            request.setHeader(b"access-control-allow-origin", origin)
        app = self.get_app()
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return listing_plan(app).render(app, int(self.now()))
