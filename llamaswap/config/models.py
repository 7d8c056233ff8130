"""``models.<id>`` entries into ModelConfig (SPEC 2.4)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

from llamaswap.config.fields import Section
from llamaswap.config.filters import jsonable, read_filters
from llamaswap.config.model import (
    Capabilities,
    MemoryNeed,
    ModelConfig,
    Timeouts,
    frozen_mapping,
)
from llamaswap.config.problems import Problems
from llamaswap.memory import parse_size

COMFYUI_MODEL = "comfyui_auto"
COMFYUI_MIN_CONCURRENCY = 50
DEFAULT_CONCURRENCY = 10
MODALITIES = ("text", "audio", "image")


@attrs.frozen
class ModelDefaults:
    """The global values models inherit."""

    ttl: float = 0
    unload_timeout: float = 10
    health_check_timeout: float = 120
    send_loading_state: bool = False


def check_url(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) base URL, or None when it is."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "scheme must be http or https"
    if not parts.hostname:
        return "missing host"
    return None


EXPECT_CONTINUE_UNUSED = (
    "has no effect in llamaswap: it reads the whole request body before forwarding and "
    "sends it without \"Expect: 100-continue\", so there is never a 100 Continue to wait for"
)


def read_timeouts(section: Section, base: Timeouts) -> Timeouts:
    """A ``timeouts`` section over ``base`` (each value an integer of seconds >= 0)."""
    if section.has("expectContinue"):
        section.problems.warn(section.at("expectContinue"), EXPECT_CONTINUE_UNUSED)
    values = section.get_non_negative_ints(
        (
            ("connect", "connect"),
            ("keepalive", "keepalive"),
            ("responseHeader", "response_header"),
            ("tlsHandshake", "tls_handshake"),
            ("expectContinue", "expect_continue"),
            ("idleConn", "idle_conn"),
        ),
        base,
    )
    return Timeouts(**values)


def _capabilities(section: Section) -> Capabilities:
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("in", "out"):
        items = section.get_str_list(key)
        for item in items:
            if item not in MODALITIES:
                section.bad(key, f'invalid modality "{item}", must be one of: text, audio, image')
        lists[key] = tuple(i for i in items if i in MODALITIES)
    context = section.get_int("context", 0)
    if context < 0:
        section.bad("context", f"must be >= 0, got {context}")
        context = 0
    return Capabilities(
        input=lists["in"],
        output=lists["out"],
        tools=section.get_bool("tools", False),
        reranker=section.get_bool("reranker", False),
        context=context,
    )


def read_memory(section: Section) -> MemoryNeed:
    """``models.<id>.memory``: ``gpu`` (a size like 6GiB) and ``devices`` (GPU indexes)."""
    for key in section.raw:
        if key not in ("gpu", "devices"):
            section.bad(str(key), "unknown key (memory takes gpu and devices)")
    gpu: int | None = None
    if section.has("gpu"):
        try:
            gpu = parse_size(section.raw["gpu"])
        except ValueError as error:
            section.bad("gpu", str(error))
    devices: list[int] = []
    raw_devices = section.raw.get("devices")
    if raw_devices is not None and not isinstance(raw_devices, list):
        raw_devices = [raw_devices]
    for i, item in enumerate(raw_devices or []):
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            section.problems.add(f"{section.at('devices')}[{i}]",
                                 f"expected a GPU index (an integer >= 0), got {item!r}")
        elif item not in devices:
            devices.append(item)
    return MemoryNeed(gpu=gpu, devices=tuple(devices))


def read_model(
    model_id: str, raw: dict[str, Any], port: int | None, defaults: ModelDefaults,
    problems: Problems,
) -> ModelConfig:
    """One model with defaults and inheritance applied (aliases from setParamsByID later)."""
    s = Section(raw, f"models.{model_id}", problems)
    ttl: float = s.get_int("ttl", -1)
    if ttl == -1:
        ttl = defaults.ttl
    elif ttl < 0:
        s.bad("ttl", f"must be >= 0, got {int(ttl)}")
        ttl = defaults.ttl
    unload: float = s.get_int("unloadTimeout", 0)
    if unload < 0:
        s.bad("unloadTimeout", f"must be >= 0, got {int(unload)}")
    if unload <= 0:
        unload = defaults.unload_timeout
    proxy = s.get_str("proxy").strip()
    if proxy and "${" not in proxy:
        reason = check_url(proxy)
        if reason:
            s.bad("proxy", f"invalid proxy URL {proxy!r}: {reason}")
    limit = s.get_int("concurrencyLimit", 0)
    if limit <= 0:
        limit = DEFAULT_CONCURRENCY
    compat = s.section("compat")
    ignore_ws = compat.get_bool("ignoreWebsockets", False)
    if model_id == COMFYUI_MODEL:
        limit = max(limit, COMFYUI_MIN_CONCURRENCY)
        ignore_ws = True
    s.get_int("healthCheckTimeout", 0)  # accepted; the global value always wins
    return ModelConfig(
        id=model_id,
        cmd=s.get_str("cmd"),
        cmd_stop=s.get_str("cmdStop"),
        proxy=proxy,
        aliases=tuple(a.strip() for a in s.get_str_list("aliases") if a.strip()),
        env=tuple(s.get_str_list("env")),
        check_endpoint=s.get_str("checkEndpoint", "/health").strip() or "/health",
        ttl=ttl,
        unload_timeout=unload,
        health_check_timeout=defaults.health_check_timeout,
        unlisted=s.get_bool("unlisted", False),
        use_model_name=s.get_str("useModelName"),
        name=s.get_str("name").strip(),
        description=s.get_str("description").strip(),
        concurrency_limit=limit,
        filters=read_filters(s.section("filters")),
        metadata=frozen_mapping(jsonable(s.get_map("metadata"))),
        send_loading_state=s.get_bool("sendLoadingState", defaults.send_loading_state),
        timeouts=read_timeouts(s.section("timeouts"), Timeouts()),
        capabilities=_capabilities(s.section("capabilities")),
        ignore_websockets=ignore_ws,
        port=port,
        memory=read_memory(s.section("memory")),
    )


def resolve_aliases(models: dict[str, ModelConfig], order: list[str],
                    problems: Problems) -> tuple[dict[str, ModelConfig], dict[str, str]]:
    """Check alias uniqueness, add setParamsByID aliases; the models and alias -> id map."""
    aliases: dict[str, str] = {}
    for model_id in order:
        for alias in models[model_id].aliases:
            owner = aliases.get(alias)
            if owner is not None and owner != model_id:
                problems.add(
                    f"models.{model_id}.aliases",
                    f"duplicate alias '{alias}' (already used by model {owner})",
                )
            elif owner is None:
                aliases[alias] = model_id
    out = dict(models)
    for model_id in order:
        model = models[model_id]
        extra: list[str] = []
        for key in model.filters.set_params_by_id:
            path = f"models.{model_id}.filters.setParamsByID"
            if key == model_id:
                continue
            if key in models:
                problems.add(path, f"key '{key}' conflicts with an existing model ID")
                continue
            owner = aliases.get(key)
            if owner is not None and owner != model_id:
                problems.add(path, f"duplicate alias '{key}', already used by model {owner}")
                continue
            if owner is None:
                aliases[key] = model_id
                extra.append(key)
        if extra:
            out[model_id] = attrs.evolve(model, aliases=(*model.aliases, *extra))
    return out, aliases
