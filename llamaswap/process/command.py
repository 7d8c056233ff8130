"""Turning ``cmd``/``cmdStop`` text into an argv, without a shell (SPEC 3.2)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

_SEPARATORS = " \t\n"
_DQUOTE_ESCAPABLE = '$`"\\\n'


class CommandError(ValueError):
    """A command that cannot be parsed or whose executable cannot be found."""


def strip_comments_and_continuations(text: str) -> str:
    """Drop whole-line ``#`` comments; turn a trailing ``\\`` into a space."""
    out: list[str] = []
    for line in text.split("\n"):
        trimmed = line.strip()
        if trimmed.startswith("#"):
            continue
        if trimmed.endswith("\\"):
            out.append(trimmed[:-1] + " ")
        else:
            out.append(line)
    return "\n".join(out)


def split_words(text: str) -> list[str]:
    """POSIX-shell-like word splitting: quotes and backslashes, nothing expanded."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _SEPARATORS:
            if in_word:
                words.append("".join(word))
                word = []
                in_word = False
            i += 1
        elif c == "'":
            in_word = True
            end = text.find("'", i + 1)
            if end < 0:
                word.append(text[i + 1 :])
                i = n
            else:
                word.append(text[i + 1 : end])
                i = end + 1
        elif c == '"':
            in_word = True
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in _DQUOTE_ESCAPABLE:
                    if text[i + 1] != "\n":
                        word.append(text[i + 1])
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            i += 1
        elif c == "\\":
            in_word = True
            if i + 1 < n:
                if text[i + 1] != "\n":
                    word.append(text[i + 1])
                i += 2
            else:
                i += 1
        else:
            in_word = True
            word.append(c)
            i += 1
    if in_word:
        words.append("".join(word))
    return words


def parse_command(text: str) -> list[str]:
    """The argv for a ``cmd``/``cmdStop`` text (SPEC 3.2); raises CommandError if empty."""
    argv = split_words(strip_comments_and_continuations(text))
    if not argv:
        raise CommandError("empty command")
    return argv


def resolve_executable(argv: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` with ``argv[0]`` made absolute by a PATH lookup, like execvp."""
    exe = argv[0]
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = shutil.which(exe, path=path)
    if found is None:
        where = "" if os.sep in exe else f" in PATH ({path})"
        raise CommandError(f"executable {exe!r} not found{where}")
    return [os.path.abspath(found), *argv[1:]]
