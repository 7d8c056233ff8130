"""Proxy log plumbing: a twisted.logger observer writing ``[LEVEL] message`` lines into the
proxy LogBuffer (SPEC §9.2), Go time-layout prefixes, and the ``logToStdout`` wiring (§9.1)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

from llamaswap.observe.accepterrors import PORT_NAMESPACES, AcceptErrors
from llamaswap.observe.stdout import write_real_stdout
from llamaswap.observe.types import LogSource

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
_TWISTED_LEVELS = {
    LogLevel.debug: ("DEBUG", 0),
    LogLevel.info: ("INFO", 1),
    LogLevel.warn: ("WARN", 2),
    LogLevel.error: ("ERROR", 3),
    LogLevel.critical: ("ERROR", 3),
}
_STRFTIME = {
    "ansic": "%a %b %e %H:%M:%S %Y",
    "unixdate": "%a %b %e %H:%M:%S %Z %Y",
    "rubydate": "%a %b %d %H:%M:%S %z %Y",
    "rfc822": "%d %b %y %H:%M %Z",
    "rfc822z": "%d %b %y %H:%M %z",
    "rfc850": "%A, %d-%b-%y %H:%M:%S %Z",
    "rfc1123": "%a, %d %b %Y %H:%M:%S %Z",
    "rfc1123z": "%a, %d %b %Y %H:%M:%S %z",
    "stamp": "%b %e %H:%M:%S",
}
_FRACTION = {"stampmilli": 3, "stampmicro": 6, "stampnano": 9}
STDOUT_MODES = ("proxy", "upstream", "both", "none")
_WARN = LEVELS["warn"]


def parse_level(text: str) -> int:
    """``logLevel`` to a threshold; anything unknown means info."""
    return LEVELS.get(text.strip().lower(), 1)


def format_time(ts: float, layout: str) -> str:
    """Format ``ts`` (local time) with a Go layout name; "" for an empty/unknown layout."""
    layout = layout.strip().lower()
    when = datetime.datetime.fromtimestamp(ts).astimezone()
    if layout in _STRFTIME:
        return when.strftime(_STRFTIME[layout])
    if layout in _FRACTION:
        digits = f"{when.microsecond:06d}000"[: _FRACTION[layout]]
        return when.strftime(_STRFTIME["stamp"]) + "." + digits
    if layout in ("rfc3339", "rfc3339nano"):
        text = when.isoformat(timespec="seconds" if layout == "rfc3339" else "microseconds")
        if layout == "rfc3339nano":
            head, _, tail = text.partition(".")
            frac, zone = tail[:6].rstrip("0"), tail[6:]
            text = head + ("." + frac if frac else "") + zone
        return text.replace("+00:00", "Z")
    if layout == "kitchen":
        return when.strftime("%I:%M%p").lstrip("0")
    return ""


UPSTREAM_NAMESPACE = "llamaswap.upstream"


@implementer(ILogObserver)
class ProxyLogObserver:
    """Formats twisted.logger events as llama-swap proxy log lines into ``buffer``."""

    def __init__(self, buffer: LogSource, level: str = "info", time_format: str = "") -> None:
        """Discard events below ``level``; prefix lines with ``time_format`` when set."""
        self.buffer = buffer
        self.threshold = parse_level(level)
        self.time_format = time_format
        self.accept_errors = AcceptErrors()

    def configure(self, level: str, time_format: str) -> None:
        """Apply a reloaded ``logLevel``/``logTimeFormat``."""
        self.threshold = parse_level(level)
        self.time_format = time_format

    def __call__(self, event: dict[str, Any]) -> None:
        """Write one event (never raises into the logging system)."""
        namespace = event.get("log_namespace")
        if namespace == UPSTREAM_NAMESPACE:
            return  # upstream output has its own log; logToStdout decides if it is shown
        if namespace in PORT_NAMESPACES:
            report = self.accept_errors.absorb(event)
            if report is not None:
                if report and self.threshold <= _WARN:
                    self._write(event, "WARN", report)
                return
        name, rank = _TWISTED_LEVELS.get(event.get("log_level", LogLevel.info), ("INFO", 1))
        if rank < self.threshold:
            return
        text = event.get("access_line") or formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}: {failure.getErrorMessage()}"
        self._write(event, name, text)

    def _write(self, event: dict[str, Any], name: str, text: str) -> None:
        prefix = ""
        if self.time_format:
            stamp = format_time(event.get("log_time") or 0.0, self.time_format)
            prefix = f"{stamp} " if stamp else ""
        self.buffer.write(f"{prefix}[{name}] {text}\n".encode("utf-8", "replace"))


def configure_stdout(
    mode: str,
    proxy_log: LogSource,
    upstream_log: LogSource,
    combined: LogSource,
    write: Callable[[bytes], Any],
) -> Callable[[], None]:
    """Wire ``logToStdout``: chosen logs feed ``combined`` and ``write`` (stdout).

    Returns a function that undoes the wiring. ``none`` wires nothing (the combined log
    stays empty); the proxy/upstream histories are kept either way.
    """
    if mode not in STDOUT_MODES:
        raise ValueError(f"logToStdout must be one of: {', '.join(STDOUT_MODES)}")
    sources = {
        "proxy": [proxy_log],
        "upstream": [upstream_log],
        "both": [proxy_log, upstream_log],
        "none": [],
    }[mode]

    def forward(data: bytes) -> None:
        combined.write(data)
        write(data)

    undo = [source.subscribe(forward) for source in sources]

    def unwire() -> None:
        for u in undo:
            u()

    return unwire


class ProxyLogging:
    """The service's logging, installed once: twisted.logger events -> proxy log lines,
    and ``logToStdout`` wiring into the combined log and stdout."""

    def __init__(
        self,
        *,
        proxy_log: LogSource,
        upstream_log: LogSource,
        combined: LogSource,
        level: str = "info",
        time_format: str = "",
        to_stdout: str = "proxy",
        publisher: LogPublisher | None = None,
        write: Callable[[bytes], Any] = write_real_stdout,
    ) -> None:
        """Add the observer to ``publisher`` (default: the global one) and wire stdout."""
        self.combined = combined
        self.observer = ProxyLogObserver(proxy_log, level, time_format)
        self._publisher = publisher if publisher is not None else globalLogPublisher
        self._publisher.addObserver(self.observer)
        self._unwire = configure_stdout(to_stdout, proxy_log, upstream_log, combined, write)

    def reconfigure(self, level: str, time_format: str) -> None:
        """Apply a reload's ``logLevel``/``logTimeFormat`` (``logToStdout`` is fixed at start)."""
        self.observer.configure(level, time_format)

    def uninstall(self) -> None:
        """Remove the observer and the stdout wiring."""
        self._publisher.removeObserver(self.observer)
        self._unwire()
