"""``python -m llamaswap.config FILE [DIR]``: check a configuration without starting anything."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from llamaswap.config.errors import ConfigError
from llamaswap.config.loader import load_config_sources


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Print each problem (exit 1) or a summary and the warnings (exit 0)."""
    args = list(sys.argv[1:] if argv is None else argv)
    stream = sys.stdout if out is None else out
    if not args or len(args) > 2 or args[0] in ("-h", "--help"):
        stream.write("usage: python -m llamaswap.config CONFIG.yaml [CONFIG_DIR]\n")
        return 2
    try:
        config = load_config_sources(args[0], args[1] if len(args) > 1 else None)
    except ConfigError as exc:
        for line in exc.problems:
            stream.write(f"error: {line}\n")
        return 1
    for line in config.warnings:
        stream.write(f"warning: {line}\n")
    stream.write(
        f"ok: {len(config.models)} models, {len(config.aliases)} aliases, "
        f"{len(config.peers)} peers; router {config.routing.router.use}, "
        f"scheduler {config.routing.scheduler.use}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
