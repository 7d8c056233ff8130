"""``${env.NAME}`` substitution in the raw YAML text, before it is parsed (SPEC 2.1 step 1)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from llamaswap.config.problems import Problems

ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")


def _comment_start(line: str) -> int:
    """Index where a YAML ``#`` comment starts on ``line`` (len(line) when none)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"" and (i == 0 or line[i - 1] in " \t[{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return i
    return len(line)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def substitute_env(text: str, environ: Mapping[str, str], problems: Problems) -> str:
    """Replace every ``${env.NAME}``; an unset variable outside a comment is a problem."""
    if "${env." not in text:
        return text
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        cut = _comment_start(line)

        def replace(match: re.Match[str], cut: int = cut) -> str:
            name = match.group(1)
            value = environ.get(name)
            if value is None:
                if match.start() < cut:
                    problems.add("", f"environment variable '{name}' is not set")
                return match.group(0)
            if any(c in value for c in "\n\r\0"):
                if match.start() < cut:
                    problems.add(
                        "",
                        f"environment variable '{name}' contains newlines or null bytes "
                        "which are not allowed in YAML substitution",
                    )
                return match.group(0)
            return _escape(value)

        out.append(ENV_REF.sub(replace, line))
    return "".join(out)
