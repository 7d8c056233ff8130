"""Warnings for top-level keys that look like typos of known keys."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

KNOWN_KEYS = frozenset({
    "healthCheckTimeout", "logLevel", "logTimeFormat", "logToStdout", "logRequests",
    "metricsMaxInMemory", "captureBuffer", "store", "ui", "performance", "startPort",
    "globalTTL", "unloadTimeout", "sendLoadingState", "includeAliasesInList", "macros",
    "apiKeys", "models", "hooks", "routing", "groups", "matrix", "peers", "profiles",
    "selectors", "upstream", "maxRequestBodyMB", "trustedProxies", "clientTimeouts",
})


def typo_warnings(keys: Iterable[object]) -> list[str]:
    """One warning per unknown key that is a close match of a known key."""
    lowered = {k.lower(): k for k in KNOWN_KEYS}
    out: list[str] = []
    for key in keys:
        if not isinstance(key, str) or key in KNOWN_KEYS:
            continue
        match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.8)
        if match:
            out.append(f"{key}: unknown top-level key (did you mean '{lowered[match[0]]}'?); "
                       "it is ignored")
    return out
