"""The configuration as frozen, typed objects; built only by ``load_config``.

Field names are the snake_case of the YAML keys. Values are effective values:
defaults applied, inheritance resolved (``ttl`` from ``globalTTL``,
``unloadTimeout``, ``sendLoadingState``, ``concurrencyLimit``), macros and
``${PORT}`` expanded. Mappings are read-only views.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

EMPTY: Mapping[str, Any] = MappingProxyType({})

DEFAULT_CONCURRENCY_LIMIT = 10
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
DEFAULT_SESSION_ID_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")


def frozen_mapping(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``value``."""
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class Timeouts:
    """Upstream connection timeouts in seconds (0 = none)."""

    connect: float = 30
    keepalive: float = 30
    response_header: float = 0
    tls_handshake: float = 10
    expect_continue: float = 1
    idle_conn: float = 90


@attrs.frozen
class Filters:
    """Request body rewrites: params to strip, to set, and to set per requested name."""

    strip_params: tuple[str, ...] = ()
    set_params: Mapping[str, Any] = EMPTY
    set_params_by_id: Mapping[str, Mapping[str, Any]] = EMPTY

    def is_empty(self) -> bool:
        """True when no filter is configured."""
        return not (self.strip_params or self.set_params or self.set_params_by_id)


@attrs.frozen
class Capabilities:
    """What a model takes and produces, shown in /v1/models."""

    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    tools: bool = False
    reranker: bool = False
    context: int = 0

    def is_empty(self) -> bool:
        """True when nothing is declared (then nothing is rendered)."""
        return not (self.input or self.output or self.tools or self.reranker or self.context)


@attrs.frozen
class MemoryNeed:
    """``models.<id>.memory``: the GPU memory a model needs and the devices it uses.

    llamaswap's own key (llama-swap ignores it); read by the ``memory`` router.
    ``gpu`` is bytes in all, spread evenly over ``devices`` (None: not set);
    ``devices`` are NVML indexes (empty: not set).
    """

    gpu: int | None = None
    devices: tuple[int, ...] = ()


@attrs.frozen
class ModelConfig:
    """One ``models.<id>`` entry, with every default and inherited value applied."""

    id: str
    cmd: str = ""
    cmd_stop: str = ""
    proxy: str = ""
    aliases: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    check_endpoint: str = "/health"
    ttl: float = 0
    unload_timeout: float = 10
    health_check_timeout: float = 120
    unlisted: bool = False
    use_model_name: str = ""
    name: str = ""
    description: str = ""
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT
    filters: Filters = Filters()
    metadata: Mapping[str, Any] = EMPTY
    send_loading_state: bool = False
    timeouts: Timeouts = Timeouts()
    capabilities: Capabilities = Capabilities()
    ignore_websockets: bool = False
    port: int | None = None
    memory: MemoryNeed = MemoryNeed()

    @property
    def health_check_disabled(self) -> bool:
        """True when ``checkEndpoint: none``: ready as soon as it is spawned."""
        return self.check_endpoint.strip().lower() == "none"

    def env_dict(self) -> dict[str, str]:
        """The model's ``env`` entries as a mapping (later entries win)."""
        out: dict[str, str] = {}
        for entry in self.env:
            key, _, value = entry.partition("=")
            out[key] = value
        return out


@attrs.frozen
class GroupConfig:
    """A routing group: members that swap among themselves and/or evict others."""

    id: str
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False
    members: tuple[str, ...] = ()


@attrs.frozen
class MatrixConfig:
    """The matrix router's sets (in definition order), vars and eviction costs."""

    sets: tuple[tuple[str, str], ...]
    vars: Mapping[str, str] = EMPTY
    evict_costs: Mapping[str, int] = EMPTY


@attrs.frozen
class RouterConfig:
    """``routing.router``: which swapper plugin, and its parsed settings.

    ``settings`` holds ``groups`` (a mapping of id to GroupConfig, with the
    implicit ``(default)`` group for unassigned models) and ``matrix`` (a
    MatrixConfig or None), plus any other keys given, as parsed from YAML.
    """

    use: str = "group"
    settings: Mapping[str, Any] = EMPTY


@attrs.frozen
class SchedulerConfig:
    """``routing.scheduler``: which scheduler plugin, and the settings for each name."""

    use: str = "serial"
    settings: Mapping[str, Mapping[str, Any]] = EMPTY

    def settings_for(self, name: str) -> Mapping[str, Any]:
        """``routing.scheduler.settings.<name>`` (empty when absent)."""
        return self.settings.get(name, EMPTY)


@attrs.frozen
class RoutingConfig:
    """The router (swapper) and scheduler choice."""

    router: RouterConfig = RouterConfig()
    scheduler: SchedulerConfig = SchedulerConfig()


@attrs.frozen
class PeerConfig:
    """A remote OpenAI-compatible server whose models are reachable as ``<peer>/<model>``."""

    id: str
    proxy: str
    models: tuple[str, ...]
    api_key: str = ""
    filters: Filters = Filters()
    timeouts: Timeouts = Timeouts(response_header=60)


@attrs.frozen
class ProfileConfig:
    """A runtime profile: requested name -> target ("" disables the name)."""

    name: str
    description: str = ""
    pins: Mapping[str, str] = EMPTY


@attrs.frozen
class SelectorConfig:
    """A virtual model id that picks one of its targets by strategy."""

    id: str
    strategy: str
    targets: tuple[str, ...]
    spillover: int = 1
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: Mapping[str, Any] = EMPTY


@attrs.frozen
class ClientTimeouts:
    """How long a client may take to send a request, and to stay idle (0 = no limit)."""

    request_header: float = 30
    request_body: float = 30
    min_body_rate: float = 500
    idle: float = 120


@attrs.frozen
class PerformanceConfig:
    """System and GPU sampling."""

    disabled: bool = False
    every: float = 5.0


@attrs.frozen
class StoreConfig:
    """Where activity rows are kept: a SQLite file, or memory when ``path`` is None."""

    path: str | None = None


@attrs.frozen
class UIConfig:
    """Settings shipped to the web UI."""

    session_id_headers: tuple[str, ...] = DEFAULT_SESSION_ID_HEADERS


@attrs.frozen
class Config:
    """The whole configuration file."""

    models: Mapping[str, ModelConfig] = EMPTY
    aliases: Mapping[str, str] = EMPTY
    health_check_timeout: float = 120
    log_level: str = "info"
    log_time_format: str = ""
    log_to_stdout: str = "proxy"
    metrics_max_in_memory: int = 1000
    capture_buffer_mb: int = 5
    store: StoreConfig = StoreConfig()
    ui: UIConfig = UIConfig()
    performance: PerformanceConfig = PerformanceConfig()
    start_port: int = 5800
    global_ttl: float = 0
    unload_timeout: float = 10
    send_loading_state: bool = False
    include_aliases_in_list: bool = False
    api_keys: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    routing: RoutingConfig = RoutingConfig()
    peers: Mapping[str, PeerConfig] = EMPTY
    profiles: Mapping[str, ProfileConfig] = EMPTY
    selectors: Mapping[str, SelectorConfig] = EMPTY
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORE_PATHS
    max_request_body_mb: int = 256
    trusted_proxies: tuple[IPNetwork, ...] = ()
    client_timeouts: ClientTimeouts = ClientTimeouts()
    warnings: tuple[str, ...] = ()

    def resolve(self, name: str) -> str | None:
        """The model id for a model id or alias, or None."""
        if name in self.models:
            return name
        return self.aliases.get(name)
