"""Top-level scalar settings (SPEC 2.2): logging, store, ui, performance, apiKeys..."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from llamaswap.config.fields import Section
from llamaswap.config.gofmt import format_duration, parse_duration
from llamaswap.config.model import (
    DEFAULT_IGNORE_PATHS,
    ClientTimeouts,
    IPNetwork,
    PerformanceConfig,
    StoreConfig,
    UIConfig,
)

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
TIME_FORMATS = (
    "ansic", "unixdate", "rubydate", "rfc822", "rfc822z", "rfc850", "rfc1123", "rfc1123z",
    "rfc3339", "rfc3339nano", "kitchen", "stamp", "stampmilli", "stampmicro", "stampnano",
)
MIN_HEALTH_CHECK_TIMEOUT = 15
MIN_PERFORMANCE_EVERY = 5.0


def read_logging(top: Section) -> dict[str, Any]:
    """logLevel, logTimeFormat and logToStdout, normalised."""
    level = top.get_str("logLevel", "info").strip().lower()
    time_format = top.get_str("logTimeFormat").strip().lower()
    to_stdout = top.get_str("logToStdout", "proxy").strip().lower()
    if to_stdout not in LOG_TO_STDOUT:
        top.bad("logToStdout", "must be one of: proxy, upstream, both, none")
        to_stdout = "proxy"
    return {
        "log_level": level if level in LOG_LEVELS else "info",
        "log_time_format": time_format if time_format in TIME_FORMATS else "",
        "log_to_stdout": to_stdout,
    }


def read_performance(top: Section) -> PerformanceConfig:
    """performance.disabled and performance.every (a Go duration, at least 5s)."""
    perf = top.section("performance")
    every = PerformanceConfig().every
    if perf.has("every"):
        raw = perf.raw["every"]
        if not isinstance(raw, str):
            perf.bad("every", f"expected a duration such as '5s', got {raw!r}")
        else:
            try:
                seconds = parse_duration(raw)
            except ValueError:
                perf.bad("every", f"invalid duration {raw!r} (use e.g. 5s, 1m, 1h30m)")
            else:
                if seconds < MIN_PERFORMANCE_EVERY:
                    perf.bad("every", f"must be at least 5s, got {format_duration(seconds)}")
                else:
                    every = seconds
    return PerformanceConfig(disabled=perf.get_bool("disabled", False), every=every)


def read_client_timeouts(top: Section) -> ClientTimeouts:
    """clientTimeouts: seconds (and bytes a second) a client is given; each an integer >= 0."""
    section = top.section("clientTimeouts")
    values = section.get_non_negative_ints(
        (
            ("requestHeader", "request_header"),
            ("requestBody", "request_body"),
            ("minBodyRate", "min_body_rate"),
            ("idle", "idle"),
        ),
        ClientTimeouts(),
    )
    for key in section.raw:
        if key not in ("requestHeader", "requestBody", "minBodyRate", "idle"):
            section.bad(str(key), "unknown key (known: requestHeader, requestBody, "
                        "minBodyRate, idle)")
    return ClientTimeouts(**values)


def read_store(top: Section) -> StoreConfig:
    """store.path: a writable SQLite file path, or None for in-memory."""
    store = top.section("store")
    if "path" not in store.raw:
        return StoreConfig()
    path = store.get_str("path").strip()
    if not path:
        store.bad("path", "must not be empty")
        return StoreConfig()
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        store.bad("path", f"{path} is a directory, not a file")
    elif os.path.exists(path):
        if not os.access(path, os.W_OK):
            store.bad("path", f"{path} is not writable")
    else:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            store.bad("path", f"directory {directory} does not exist")
        elif not os.access(directory, os.W_OK):
            store.bad("path", f"directory {directory} is not writable")
    return StoreConfig(path=path)


def read_ui(top: Section) -> UIConfig:
    """ui.activity.session_id: trimmed, de-duplicated case-insensitively; [] disables."""
    activity = top.section("ui").section("activity")
    if not activity.has("session_id"):
        return UIConfig()
    seen: set[str] = set()
    headers: list[str] = []
    for name in activity.get_str_list("session_id"):
        name = name.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            headers.append(name)
    return UIConfig(session_id_headers=tuple(headers))


def read_ignore_paths(top: Section) -> tuple[str, ...]:
    """upstream.ignorePaths: Python regular expressions (a list replaces the default)."""
    upstream = top.section("upstream")
    patterns = upstream.get_str_list("ignorePaths")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            upstream.bad("ignorePaths", f'invalid regular expression "{pattern}": {exc}')
    return tuple(patterns) or DEFAULT_IGNORE_PATHS


def read_trusted_proxies(top: Section) -> tuple[IPNetwork, ...]:
    """trustedProxies: addresses or CIDR networks whose X-Forwarded-For/X-Real-IP is believed."""
    out: list[IPNetwork] = []
    for i, entry in enumerate(top.get_str_list("trustedProxies")):
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            top.problems.add(f"trustedProxies[{i}]",
                             f'"{entry}" is not an IP address or CIDR network')
    return tuple(out)


def read_api_keys(top: Section) -> tuple[str, ...]:
    """apiKeys: non-empty keys without spaces."""
    keys = top.get_str_list("apiKeys")
    for i, key in enumerate(keys):
        if not key.strip():
            top.problems.add(f"apiKeys[{i}]", "empty api key")
        elif " " in key:
            top.problems.add(f"apiKeys[{i}]", "api key cannot contain spaces")
    return tuple(keys)


def read_globals(top: Section) -> dict[str, Any]:
    """The simple top-level numbers and flags, with their defaults and limits."""
    hct = max(top.get_int("healthCheckTimeout", 120), MIN_HEALTH_CHECK_TIMEOUT)
    global_ttl = top.get_int("globalTTL", 0)
    if global_ttl < 0:
        top.bad("globalTTL", f"must be >= 0, got {global_ttl}")
        global_ttl = 0
    unload = top.get_int("unloadTimeout", 10)
    if unload < 0:
        top.bad("unloadTimeout", f"must be >= 0, got {unload}")
    if unload <= 0:
        unload = 10
    metrics_max = top.get_int("metricsMaxInMemory", 1000)
    body_mb = top.get_int("maxRequestBodyMB", 256)
    if body_mb < 1:
        top.bad("maxRequestBodyMB", f"must be >= 1, got {body_mb}")
        body_mb = 256
    top.get_bool("logRequests", False)  # legacy, accepted and ignored
    return {
        "health_check_timeout": hct,
        "global_ttl": global_ttl,
        "unload_timeout": unload,
        "metrics_max_in_memory": metrics_max if metrics_max > 0 else 1000,
        "capture_buffer_mb": max(top.get_int("captureBuffer", 5), 0),
        "send_loading_state": top.get_bool("sendLoadingState", False),
        "include_aliases_in_list": top.get_bool("includeAliasesInList", False),
        "max_request_body_mb": body_mb,
    }
