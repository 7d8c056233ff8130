"""Top-level settings: defaults, normalisation and validation."""

from __future__ import annotations

import os

from llamaswap.config.model import DEFAULT_IGNORE_PATHS, DEFAULT_SESSION_ID_HEADERS, ClientTimeouts

from .support import load, one_problem, problems


def test_defaults() -> None:
    """An empty config has every documented default."""
    config = load("{}\n")
    assert config.health_check_timeout == 120 and config.log_level == "info"
    assert config.log_time_format == "" and config.log_to_stdout == "proxy"
    assert config.metrics_max_in_memory == 1000 and config.capture_buffer_mb == 5
    assert config.store.path is None and config.performance.every == 5.0
    assert not config.performance.disabled
    assert config.ui.session_id_headers == DEFAULT_SESSION_ID_HEADERS
    assert config.start_port == 5800 and config.global_ttl == 0
    assert config.unload_timeout == 10 and not config.send_loading_state
    assert not config.include_aliases_in_list and config.api_keys == ()
    assert config.preload == () and config.ignore_paths == DEFAULT_IGNORE_PATHS
    assert config.max_request_body_mb == 256 and config.warnings == ()
    assert config.routing.scheduler.use == "serial" and config.routing.router.use == "group"


def test_logging_normalisation() -> None:
    """logLevel/logTimeFormat are case-insensitive; unknown values fall back silently."""
    config = load("logLevel: ' WARN '\nlogTimeFormat: RFC3339\nlogToStdout: Both\n")
    assert (config.log_level, config.log_time_format, config.log_to_stdout) == (
        "warn", "rfc3339", "both")
    config = load("logLevel: loud\nlogTimeFormat: whenever\n")
    assert (config.log_level, config.log_time_format) == ("info", "")
    assert one_problem("logToStdout: stderr\n") == (
        "logToStdout: must be one of: proxy, upstream, both, none")


def test_global_limits() -> None:
    """globalTTL/unloadTimeout negative are errors; other numbers are clamped."""
    assert problems("globalTTL: -1\nunloadTimeout: -3\n") == [
        "globalTTL: must be >= 0, got -1", "unloadTimeout: must be >= 0, got -3"]
    config = load("metricsMaxInMemory: 0\ncaptureBuffer: -1\nmaxRequestBodyMB: 12\n")
    assert config.metrics_max_in_memory == 1000 and config.capture_buffer_mb == 0
    assert config.max_request_body_mb == 12
    assert one_problem("maxRequestBodyMB: 0\n") == "maxRequestBodyMB: must be >= 1, got 0"


def test_performance_every() -> None:
    """performance.every is a Go duration, at least 5s."""
    assert load("performance: {every: 1m30s, disabled: true}\n").performance.every == 90
    assert one_problem("performance: {every: 4s}\n") == (
        "performance.every: must be at least 5s, got 4s")
    assert one_problem("performance: {every: soon}\n").startswith(
        "performance.every: invalid duration 'soon'")


def test_ui_session_headers() -> None:
    """Headers are trimmed, blank dropped, de-duplicated case-insensitively; [] disables."""
    config = load("ui: {activity: {session_id: [' X-A ', '', x-a, X-B]}}\n")
    assert config.ui.session_id_headers == ("X-A", "X-B")
    assert load("ui: {activity: {session_id: []}}\n").ui.session_id_headers == ()


def test_store_path(tmp_path: os.PathLike[str]) -> None:
    """store.path must be a writable file path."""
    path = os.path.join(tmp_path, "activity.db")
    assert load(f"store: {{path: '{path}'}}\n").store.path == path
    assert one_problem("store: {path: ''}\n") == "store.path: must not be empty"
    assert one_problem(f"store: {{path: '{tmp_path}'}}\n") == (
        f"store.path: {tmp_path} is a directory, not a file")
    missing = os.path.join(tmp_path, "nope", "a.db")
    assert one_problem(f"store: {{path: '{missing}'}}\n").startswith("store.path: directory")


def test_ignore_paths() -> None:
    """A configured list replaces the default; bad regexes are errors."""
    config = load("upstream: {ignorePaths: ['^/ws$']}\n")
    assert config.ignore_paths == ("^/ws$",)
    assert one_problem("upstream: {ignorePaths: ['(']}\n").startswith(
        'upstream.ignorePaths: invalid regular expression "(":')


def test_api_keys() -> None:
    """Empty keys and keys with spaces are rejected with their index."""
    assert problems("apiKeys: ['ok', '', 'a b']\n") == [
        "apiKeys[1]: empty api key", "apiKeys[2]: api key cannot contain spaces"]


def test_preload_resolves_aliases_and_drops_unknown() -> None:
    """Preload entries resolve aliases; unknown names are dropped with a warning."""
    config = load("""
        models:
          a: {cmd: "s ${PORT}", aliases: [al]}
          b: {cmd: "s ${PORT}"}
        hooks:
          on_startup:
            preload: [" al ", "", b, ghost, a]
    """)
    assert config.preload == ("a", "b")
    assert config.warnings == (
        "hooks.on_startup.preload: 'ghost' is not a local model or alias; it is not preloaded",)


def test_typo_warnings() -> None:
    """Close misspellings of known top-level keys warn; other unknown keys are silent."""
    config = load("modles: {}\nhealthcheckTimeout: 30\ndefs: {x: 1}\nlogRequests: true\n")
    assert len(config.warnings) == 2
    assert config.warnings[0].startswith("modles: unknown top-level key (did you mean 'models'?)")
    assert "did you mean 'healthCheckTimeout'" in config.warnings[1]


def test_client_timeouts() -> None:
    """clientTimeouts: documented defaults, integers >= 0 (0 = no limit), unknown keys named."""
    assert load("{}\n").client_timeouts == ClientTimeouts(
        request_header=30, request_body=30, min_body_rate=500, idle=120
    )
    config = load("clientTimeouts: {requestHeader: 5, requestBody: 0, minBodyRate: 0, idle: 9}\n")
    assert config.client_timeouts == ClientTimeouts(5, 0, 0, 9)
    assert one_problem("clientTimeouts: {idle: -1}\n") == (
        "clientTimeouts.idle: must be >= 0, got -1"
    )
    assert one_problem("clientTimeouts: {requestHeader: soon}\n") == (
        "clientTimeouts.requestHeader: expected an integer, got 'soon'"
    )
    assert one_problem("clientTimeouts: {header: 5}\n") == (
        "clientTimeouts.header: unknown key "
        "(known: requestHeader, requestBody, minBodyRate, idle)"
    )
    assert one_problem("clientTimeouts: 5\n") == "clientTimeouts: expected a mapping, got 5"
