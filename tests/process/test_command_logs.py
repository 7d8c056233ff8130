"""cmd parsing (SPEC 3.2) and the log ring buffer."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogEvent, globalLogPublisher

from llamaswap.process.command import CommandError, parse_command, resolve_executable
from llamaswap.process.logs import LineLogger, LogBuffer


def test_spec_example() -> None:
    """The SPEC 3.2 example splits exactly as documented."""
    text = (
        "python model1.py \\\n"
        "  -a \"double quotes\" --arg2 'single quotes' \\\n"
        "  --arg4 '\"string in string\"' -c \"'single quoted'\""
    )
    assert parse_command(text) == [
        "python", "model1.py", "-a", "double quotes", "--arg2", "single quotes",
        "--arg4", '"string in string"', "-c", "'single quoted'",
    ]


def test_comments_only_whole_lines() -> None:
    """Whole-line # comments are dropped; a # inside a line is literal."""
    text = "# leading comment\nserver --port 1 \\\n  # inner comment\n  --tag a#b"
    assert parse_command(text) == ["server", "--port", "1", "--tag", "a#b"]


def test_escapes_and_empty_args() -> None:
    """Backslash escapes, double-quote escapes, empty quoted args, tab/newline separators."""
    assert parse_command('a\\ b "x\\"y\\$z\\q" \'\' ""\tc\nd') == [
        "a b", 'x"y$z\\q', "", "", "c", "d",
    ]


def test_no_shell_features() -> None:
    """Variables, globs, pipes and ~ are passed literally."""
    assert parse_command("echo $HOME * | ~ >x") == ["echo", "$HOME", "*", "|", "~", ">x"]


def test_unterminated_quote_keeps_rest() -> None:
    """An unterminated quote keeps the rest of the text as one word."""
    assert parse_command("a 'b c") == ["a", "b c"]


def test_carriage_return_is_not_a_separator() -> None:
    """\\r is part of a word, not a separator."""
    assert parse_command("a\rb c") == ["a\rb", "c"]


def test_empty_command() -> None:
    """Empty (or comment-only) text raises 'empty command'."""
    with pytest.raises(CommandError, match="empty command"):
        parse_command("  # only a comment\n   ")


def test_resolve_executable_uses_path_and_env() -> None:
    """The executable is found in PATH (the model's PATH when given)."""
    exe_dir = os.path.dirname(sys.executable)
    resolved = resolve_executable(["python", "-V"], {"PATH": exe_dir})
    assert os.path.isabs(resolved[0]) and resolved[1:] == ["-V"]
    with pytest.raises(CommandError, match="'nope-xyz' not found in PATH"):
        resolve_executable(["nope-xyz"], {"PATH": exe_dir})


def test_logbuffer_ring_keeps_last_bytes() -> None:
    """history() is the last max_bytes bytes, across many writes and one huge write."""
    buf = LogBuffer(max_bytes=10)
    for i in range(7):
        buf.write(f"{i}ab".encode())
    assert buf.history() == b"ab4ab5ab6ab"[-10:]
    buf.write(b"0123456789XYZ")
    assert buf.history() == b"3456789XYZ"


def test_logbuffer_subscribers_and_unsubscribe() -> None:
    """Subscribers get every later write until they unsubscribe; a raising one is dropped."""
    buf = LogBuffer()
    got: list[bytes] = []
    unsubscribe = buf.subscribe(got.append)
    calls: list[bytes] = []

    def bad(data: bytes) -> None:
        calls.append(data)
        raise RuntimeError("boom")

    buf.subscribe(bad)
    buf.write(b"a")
    buf.write(b"b")
    unsubscribe()
    buf.write(b"c")
    assert got == [b"a", b"b"] and calls == [b"a"]


def test_tail_lines() -> None:
    """tail_lines gives the last non-empty lines."""
    buf = LogBuffer()
    buf.write(b"one\n\ntwo\r\nthree")
    assert buf.tail_lines(2) == ["two", "three"]


def test_line_logger_emits_events_with_model() -> None:
    """Output is split into lines, each a log event carrying model and stream."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        lines = LineLogger("llama", "stderr")
        lines.feed(b"hel")
        lines.feed(b"lo\nwor")
        lines.feed(b"ld\r\npart")
        lines.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("log_namespace") == "llamaswap.upstream"]
    assert [e["line"] for e in mine] == ["hello", "world", "part"]
    assert {e["model"] for e in mine} == {"llama"} and mine[0]["stream"] == "stderr"


def test_probe_endpoints_skip_the_resolver_for_ip_literals() -> None:
    """Probe URLs with IP literals connect directly; host names go through HostnameEndpoint."""
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.testing import MemoryReactorClock
    from twisted.web.client import URI

    from llamaswap.proxyroute import RouteCache

    factory = RouteCache(MemoryReactorClock())
    assert isinstance(factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8/h")),
                      TCP4ClientEndpoint)
    assert isinstance(factory.endpointForURI(URI.fromBytes(b"http://[::1]:8/h")),
                      TCP6ClientEndpoint)
    assert isinstance(factory.endpointForURI(URI.fromBytes(b"http://gpu-box.lan:8/h")),
                      HostnameEndpoint)
    # localhost (the default proxy host) skips the resolver and the eyeball delay too
    assert not isinstance(factory.endpointForURI(URI.fromBytes(b"http://localhost:8/h")),
                          HostnameEndpoint)


@given(st.text(alphabet="ab '\"\\\t", max_size=30))
def test_split_matches_posix_shlex(text: str) -> None:
    """Without $, backticks or newlines, splitting agrees with POSIX shlex where it parses."""
    import shlex

    if text.strip().endswith("\\"):  # SPEC: a trailing backslash is a line continuation
        return
    try:
        expected = shlex.split(text)
    except ValueError:  # unterminated quote or trailing escape: SPEC is more lenient
        return
    if not expected:
        return
    assert parse_command(text) == expected


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=64))
def test_logbuffer_history_is_tail_of_everything(writes: list[bytes], max_bytes: int) -> None:
    """history() always equals the last max_bytes of all bytes written."""
    buf = LogBuffer(max_bytes=max_bytes)
    for data in writes:
        buf.write(data)
    assert buf.history() == b"".join(writes)[-max_bytes:]
