"""Proxy log lines, levels, time prefixes and the logToStdout wiring."""

from __future__ import annotations

import datetime
import re

import pytest
from twisted.logger import Logger

from llamaswap.observe.logsetup import ProxyLogObserver, configure_stdout, format_time

from .fakes import FakeLogBuffer


def test_levels_and_format() -> None:
    """Events below logLevel are dropped; others become '[LEVEL] message' lines."""
    buf = FakeLogBuffer()
    observer = ProxyLogObserver(buf, level=" WARN ")
    log = Logger(observer=observer)
    log.info("hidden {x}", x=1)
    log.warn("<{model}> slow start", model="m1")
    log.critical("bad")
    assert buf.history() == b"[WARN] <m1> slow start\n[ERROR] bad\n"
    observer.configure("debug", "")
    log.debug("now shown")
    assert buf.history().endswith(b"[DEBUG] now shown\n")


def test_unknown_level_means_info_and_failures_carry_their_message() -> None:
    """An unknown logLevel is info; log.failure lines include the error text."""
    buf = FakeLogBuffer()
    log = Logger(observer=ProxyLogObserver(buf, level="verbose"))
    log.debug("no")
    try:
        raise ValueError("kaput")
    except ValueError:
        log.failure("swap failed")
    assert buf.history() == b"[ERROR] swap failed: kaput\n"


def test_time_prefix_uses_go_layouts() -> None:
    """logTimeFormat prefixes each line with the event time in the chosen layout."""
    buf = FakeLogBuffer()
    Logger(observer=ProxyLogObserver(buf, time_format="RFC3339")).info("hello")
    line = buf.history().decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d) \[INFO\] hello\n", line)
    ts = datetime.datetime(2026, 1, 2, 15, 4, 5, 123456).timestamp()
    assert format_time(ts, "kitchen") == "3:04PM"
    assert format_time(ts, "stampmilli") == "Jan  2 15:04:05.123"
    assert format_time(ts, "nonsense") == ""


def test_stdout_wiring_modes() -> None:
    """proxy/upstream/both choose what reaches stdout and the combined log; none keeps it empty."""
    for mode, expected in [
        ("proxy", b"P"),
        ("upstream", b"U"),
        ("both", b"PU"),
        ("none", b""),
    ]:
        proxy, upstream, combined = FakeLogBuffer(), FakeLogBuffer(), FakeLogBuffer()
        out: list[bytes] = []
        undo = configure_stdout(mode, proxy, upstream, combined, out.append)
        proxy.write(b"P")
        upstream.write(b"U")
        assert combined.history() == expected and b"".join(out) == expected
        undo()
        proxy.write(b"P")
        assert combined.history() == expected


def test_stdout_wiring_rejects_unknown_mode() -> None:
    """An unknown logToStdout value is an error naming the choices."""
    buf = FakeLogBuffer()
    with pytest.raises(ValueError, match="proxy, upstream, both, none"):
        configure_stdout("all", buf, buf, buf, print)
