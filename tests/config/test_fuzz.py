"""Fuzz: random documents under known keys give a Config or a ConfigError, nothing else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamaswap.config import Config, ConfigError

from .support import load

TOP_KEYS = [
    "healthCheckTimeout", "logLevel", "logToStdout", "logTimeFormat", "metricsMaxInMemory",
    "captureBuffer", "store", "ui", "performance", "startPort", "globalTTL", "unloadTimeout",
    "sendLoadingState", "includeAliasesInList", "macros", "apiKeys", "models", "hooks",
    "routing", "groups", "matrix", "peers", "profiles", "selectors", "upstream",
    "maxRequestBodyMB", "clientTimeouts",
]
INNER_KEYS = [
    "cmd", "cmdStop", "proxy", "aliases", "env", "checkEndpoint", "ttl", "unloadTimeout",
    "unlisted", "useModelName", "name", "description", "concurrencyLimit", "filters",
    "stripParams", "setParams", "setParamsByID", "macros", "metadata", "sendLoadingState",
    "timeouts", "connect", "capabilities", "in", "out", "context", "compat",
    "ignoreWebsockets", "router", "scheduler", "use", "settings", "groups", "matrix", "sets",
    "vars", "evict_costs", "members", "swap", "exclusive", "fifo", "priority", "models",
    "apiKey", "pins", "strategy", "targets", "spillover", "on_startup", "preload",
    "activity", "session_id", "every", "disabled", "path", "ignorePaths", "a", "b",
    "requestHeader", "requestBody", "minBodyRate", "idle",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False), st.text(max_size=8),
    st.sampled_from(["${PORT}", "s ${PORT}", "${MODEL_ID}", "${PID}", "${x}", "a & b",
                     "(a", "http://h:1", "none", "-1", "group", "matrix", "fifo", "serial",
                     "pin", "warm", "spillover", "5s", "a,b"]),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(INNER_KEYS), children, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(TOP_KEYS), trees, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_load_or_raise_config_error(doc: dict[str, object]) -> None:
    """Property: loading random YAML yields a Config or a ConfigError only."""
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        result = load(text)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert not any("unexpected error while loading" in p for p in exc.problems), exc
    else:
        assert isinstance(result, Config)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_random_text_loads_or_raises_config_error(text: str) -> None:
    """Property: arbitrary text never raises anything but ConfigError."""
    try:
        load(text)
    except ConfigError as exc:
        assert not any("unexpected error while loading" in p for p in exc.problems), exc
