"""Proxy log lines, levels, time prefixes and the logToStdout wiring."""

from __future__ import annotations

import datetime
import re

import pytest
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

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


def test_proxy_logging_installs_and_uninstalls() -> None:
    """Events on the publisher reach the proxy log, combined log and stdout until uninstalled."""
    from twisted.logger import LogPublisher

    from llamaswap.observe.logsetup import ProxyLogging

    publisher = LogPublisher()
    proxy, upstream, combined = FakeLogBuffer(), FakeLogBuffer(), FakeLogBuffer()
    out: list[bytes] = []
    logging = ProxyLogging(
        proxy_log=proxy, upstream_log=upstream, combined=combined, level="info",
        to_stdout="both", publisher=publisher, write=out.append,
    )  # fmt: skip
    log = Logger(observer=publisher)
    log.info("<{m}> ready", m="m1")
    upstream.write(b"llama says hi\n")
    assert combined.history() == b"[INFO] <m1> ready\nllama says hi\n" == b"".join(out)
    logging.reconfigure("error", "")
    log.warn("quiet")
    logging.uninstall()
    log.error("after")
    assert proxy.history() == b"[INFO] <m1> ready\n"


def _port_event(text: str, when: float, **fields: object) -> dict[str, object]:
    """An event as twisted's listening TCP port logs it."""
    return {
        "log_namespace": "twisted.internet.tcp.Port", "log_format": text,
        "log_level": LogLevel.info, "log_time": when, **fields,
    }  # fmt: skip


def test_out_of_descriptors_flood_becomes_one_line_per_interval() -> None:
    """Twisted's three lines per refused connection fold into one WARN line per 10 s."""
    buf = FakeLogBuffer()
    observer = ProxyLogObserver(buf)
    observer.accept_errors.limit = lambda: 1024
    for i in range(3000):  # 3,000 refused connections over 30 s
        when = 1000.0 + i / 100
        observer(_port_event("EMFILE encountered; releasing reserved file descriptor.", when))
        observer(_port_event("EMFILE recovery: Closed socket from {address}", when,
                             address=("127.0.0.1", i)))
        observer(_port_event("Re-reserving EMFILE recovery file descriptor.", when))
    observer(_port_event("Could not accept new connection ({acceptError})", 1031.0,
                         acceptError="ENFILE"))
    lines = buf.history().decode().splitlines()
    assert lines == [
        "[WARN] out of file descriptors (open-file limit 1024): new connections are being "
        "refused; counts follow at most every 10s (see clientTimeouts and the open-file limit)",
        "[WARN] out of file descriptors (open-file limit 1024): 1000 new connections refused "
        "in the last 10s, 1000 in all",
        "[WARN] out of file descriptors (open-file limit 1024): 1000 new connections refused "
        "in the last 10s, 2000 in all",
        "[WARN] out of file descriptors (open-file limit 1024): 1001 new connections refused "
        "in the last 11s, 3001 in all",
    ]


def test_other_port_events_pass_and_warn_threshold_applies() -> None:
    """Port events that are not accept errors are logged as usual; logLevel error hides the
    report."""
    buf = FakeLogBuffer()
    observer = ProxyLogObserver(buf, level="error")
    observer(_port_event("EMFILE recovery: Closed socket from {address}", 1.0, address="x"))
    assert buf.history() == b""
    observer.configure("info", "")
    observer(_port_event("{factory} starting on {port}", 2.0, factory="Site", port=80))
    assert buf.history() == b"[INFO] Site starting on 80\n"


def test_spare_descriptor_failures_are_folded_too() -> None:
    """The port's spare descriptor logs its own failure (with a traceback): folded as well."""
    buf = FakeLogBuffer()
    observer = ProxyLogObserver(buf)
    observer.accept_errors.limit = lambda: 128
    event = _port_event("Could not reserve EMFILE recovery file descriptor.", 5.0)
    event["log_namespace"] = "twisted.internet.tcp._FileDescriptorReservation"
    event["log_failure"] = Failure(OSError(24, "Too many open files"))
    observer(event)
    lines = buf.history().decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[WARN] out of file descriptors")
    assert "EMFILE" not in buf.history().decode()
