"""Everything the HTTP layer needs to answer requests, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from llamaswap import __version__
from llamaswap.config.model import Config

if TYPE_CHECKING:
    from llamaswap.observe.hooks import RequestObserver
    from llamaswap.process.logs import LogBuffer
    from llamaswap.process.upstream import Upstream
    from llamaswap.router.base import Router


@attrs.define
class App:
    """The running service as the web layer sees it; swapped as a whole on reload."""

    config: Config
    router: Router
    upstreams: Mapping[str, Upstream]
    proxy_log: LogBuffer
    upstream_log: LogBuffer
    observers: list[RequestObserver] = attrs.field(factory=list)
    active_profile: str | None = None
    version: str = __version__
    extras: dict[str, Any] = attrs.field(factory=dict)
