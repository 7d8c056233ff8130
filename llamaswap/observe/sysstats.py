"""System figures (CPU per core, memory, swap, load, network) read from /proc; blocking."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

MIB = 1048576


@attrs.frozen
class NetIO:
    """Byte counters of one network interface."""

    name: str
    bytes_recv: int
    bytes_sent: int


@attrs.frozen
class SysSample:
    """One system sample; memory figures in MiB as in llama-swap's /api/performance."""

    timestamp: float
    cpu_util_per_core: tuple[float, ...]
    mem_total_mb: float
    mem_used_mb: float
    mem_free_mb: float
    swap_total_mb: float
    swap_used_mb: float
    load_avg_1: float
    load_avg_5: float
    load_avg_15: float
    net_io: tuple[NetIO, ...]


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def parse_cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat text."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            core = int(name[3:])
            values = [int(v) for v in rest.split()]
        except ValueError:
            continue
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        out[core] = (total - idle, total)
    return out


def cpu_percent(
    prev: Mapping[int, tuple[int, int]], cur: Mapping[int, tuple[int, int]]
) -> tuple[float, ...]:
    """Per-core utilisation in percent between two /proc/stat readings."""
    result = []
    for core in sorted(cur):
        busy, total = cur[core]
        pbusy, ptotal = prev.get(core, (0, 0))
        dt = total - ptotal
        result.append(round(100.0 * (busy - pbusy) / dt, 2) if dt > 0 else 0.0)
    return tuple(result)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per key."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            factor = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
            out[key.strip()] = int(parts[0]) * factor
    return out


def parse_net_dev(text: str) -> tuple[NetIO, ...]:
    """Interface byte counters from /proc/net/dev text (loopback included, sorted by name)."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            out.append(NetIO(name.strip(), int(fields[0]), int(fields[8])))
    return tuple(sorted(out, key=lambda n: n.name))


class SystemReader:
    """Reads a SysSample from a /proc tree; keeps the previous CPU reading for percentages."""

    def __init__(self, proc_root: str = "/proc") -> None:
        """Read from ``proc_root`` (tests point it at a fake tree)."""
        self._root = proc_root
        self._prev_cpu: dict[int, tuple[int, int]] = {}

    def available(self) -> bool:
        """True when the /proc files exist."""
        return os.path.exists(os.path.join(self._root, "meminfo"))

    def read(self, timestamp: float) -> SysSample:
        """Take one sample (blocking file reads: call from a thread)."""
        join = os.path.join
        cur = parse_cpu_times(_read(join(self._root, "stat")))
        cpu = cpu_percent(self._prev_cpu, cur)
        self._prev_cpu = cur
        mem = parse_meminfo(_read(join(self._root, "meminfo")))
        total = mem.get("MemTotal", 0)
        available = mem.get("MemAvailable", mem.get("MemFree", 0))
        swap_total = mem.get("SwapTotal", 0)
        load = [*_read(join(self._root, "loadavg")).split(), "0", "0", "0"][:3]
        try:
            net = parse_net_dev(_read(join(self._root, "net", "dev")))
        except OSError:
            net = ()
        return SysSample(
            timestamp=timestamp,
            cpu_util_per_core=cpu,
            mem_total_mb=total / MIB,
            mem_used_mb=(total - available) / MIB,
            mem_free_mb=mem.get("MemFree", 0) / MIB,
            swap_total_mb=swap_total / MIB,
            swap_used_mb=(swap_total - mem.get("SwapFree", 0)) / MIB,
            load_avg_1=float(load[0]),
            load_avg_5=float(load[1]),
            load_avg_15=float(load[2]),
            net_io=net,
        )
