"""Absolute-form request targets become origin-form targets and a Host (RFC 9112 3.2.2)."""

from __future__ import annotations

import pytest

from llamaswap.web.target import OriginForm, origin_form


@pytest.mark.parametrize(("target", "expected"), [
    (b"http://127.0.0.1:8080/health", OriginForm(b"127.0.0.1:8080", b"/health")),
    (b"HTTPS://h/v1/chat/completions?x=1&y", OriginForm(b"h", b"/v1/chat/completions?x=1&y")),
    (b"http://user:pw@h:1/a", OriginForm(b"h:1", b"/a")),
    (b"http://h", OriginForm(b"h", b"/")),
    (b"http://h?q=1", OriginForm(b"h", b"/?q=1")),
    (b"http://h/a#frag", OriginForm(b"h", b"/a")),
    (b"http:///x", OriginForm(b"", b"/x")),
])
def test_absolute_targets_split_into_host_and_path(target: bytes, expected: OriginForm) -> None:
    """The authority becomes the host; the rest (at least ``/``) is the target."""
    assert origin_form(target) == expected


@pytest.mark.parametrize("target", [b"/health", b"//h/x", b"*", b"health", b"h:80", b""])
def test_other_forms_are_left_alone(target: bytes) -> None:
    """Origin, asterisk and authority forms, and nonsense, are not rewritten."""
    assert origin_form(target) is None
