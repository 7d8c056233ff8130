"""A fake GPU for tests: responders report their memory in files, a probe reads them.

``python -m llamaswap.testing.responder --fake-gpu DIR --fake-gpu-memory 4GiB`` writes
``DIR/<its pid>`` holding ``<device> <bytes>``. ``FakeGpuProbe(DIR, {0: total})`` is a
``MemoryProbe``: a device's free memory is its total minus what live pids' files say, and
each file's bytes belong to the model whose process tree holds the pid (found through
/proc, as the real probe does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from llamaswap.memory import DeviceMemory
from llamaswap.process.memprobe import ProbeSample, sum_by_model

__all__ = ["FakeGpuProbe", "report"]


def report(directory: str, device: int, size: int) -> None:
    """Write this process's fake GPU usage (the responder calls it)."""
    path = os.path.join(directory, str(os.getpid()))
    with open(path + ".tmp", "w") as f:
        f.write(f"{device} {size}\n")
    os.replace(path + ".tmp", path)


def _alive(pid: int, proc_root: str) -> bool:
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] != b"Z"


class FakeGpuProbe:
    """Devices of fixed totals; usage from the files of live pids in ``directory``."""

    def __init__(self, directory: str, totals: Mapping[int, int],
                 proc_root: str = "/proc") -> None:
        """``totals``: bytes per device index."""
        self.directory = directory
        self.totals = dict(totals)
        self.proc_root = proc_root
        self.samples = 0

    def sample(self, roots: Mapping[str, int]) -> ProbeSample:
        """Read every live pid's file; attribute pids to models by process tree."""
        self.samples += 1
        held: dict[int, dict[int, int]] = {}
        for name in os.listdir(self.directory):
            if not name.isdigit() or not _alive(int(name), self.proc_root):
                continue
            try:
                with open(os.path.join(self.directory, name)) as f:
                    device, size = (int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
            held[int(name)] = {device: size}
        used = {d: sum(h.get(d, 0) for h in held.values()) for d in self.totals}
        devices = {d: DeviceMemory(total=t, free=max(0, t - used[d]))
                   for d, t in self.totals.items()}
        return ProbeSample(devices=devices, usage=sum_by_model(held, roots, self.proc_root))

    def close(self) -> None:
        """Nothing to release."""
