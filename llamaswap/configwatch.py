"""``--watch-config``: poll the config file and the config directory, reload once per burst."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="llamaswap")

Stamp = tuple[int, int]  # mtime in ns, size
Snapshot = tuple[Stamp | None, tuple[tuple[str, Stamp], ...] | None]


def file_stamp(path: str) -> Stamp | None:
    """The modification time and size of ``path`` (symlinks followed), or None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def dir_stamps(directory: str) -> tuple[tuple[str, Stamp], ...] | None:
    """Name, time and size of each ``*.yml``/``*.yaml`` file of ``directory``; None if none."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    found: list[tuple[str, Stamp]] = []
    for name in names:
        if not name.endswith((".yml", ".yaml")):
            continue
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        stamp = file_stamp(path)
        if stamp is not None:
            found.append((name, stamp))
    return tuple(found) or None


class ConfigWatcher:
    """Polls the config sources every ``interval`` seconds and calls ``reload`` after changes.

    A change is acted on at the first poll that sees nothing new since the previous one, so
    an editor's save, a ``cp`` of several files or a ConfigMap swap reloads once. A config
    file that disappears, or a directory that disappears or holds no YAML file, is not a
    change (the next state with files is); the first poll only records where things stand.
    """

    def __init__(
        self,
        config_path: str | None,
        config_dir: str | None,
        reload: Callable[[], Any],
        clock: Any,
        interval: float,
    ) -> None:
        self._path = config_path
        self._dir = config_dir
        self._reload = reload
        self._interval = interval
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self._seen: Snapshot = self._snapshot((None, None))
        self._pending = False

    def _snapshot(self, previous: Snapshot) -> Snapshot:
        """The sources now; a part that is gone keeps its previous value."""
        stamp = file_stamp(self._path) if self._path else None
        files = dir_stamps(self._dir) if self._dir else None
        return (stamp or previous[0], files or previous[1])

    def start(self) -> None:
        """Start polling (the first poll is one interval from now)."""
        self._seen = self._snapshot(self._seen)
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        """Stop polling."""
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> Any:
        """Look once; returns what ``reload`` returned when this poll triggered one, else None."""
        current = self._snapshot(self._seen)
        if current != self._seen:
            self._seen = current
            self._pending = True  # wait for a quiet poll: the burst may not be over
            return None
        if not self._pending:
            return None
        self._pending = False
        log.info("configuration changed on disk")
        return self._reload()
