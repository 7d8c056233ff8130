"""Pick ports for test upstreams that the kernel will not hand out to client sockets."""

from __future__ import annotations

import random
import socket

# Below Linux's default ephemeral range (32768-60999), so a test's own outgoing
# connections cannot take a port an upstream is about to bind.
LOW, HIGH = 20000, 32000


def free_port_block(count: int = 8, attempts: int = 50) -> int:
    """The first of ``count`` consecutive ports in [20000, 32000) that are free right now."""
    for _ in range(attempts):
        base = random.randrange(LOW, HIGH - count)
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found in [{LOW}, {HIGH})")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
