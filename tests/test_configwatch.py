"""ConfigWatcher: which changes of the config file and directory reload, and how often."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock

from llamaswap.configwatch import ConfigWatcher

INTERVAL = 2.0


def touch(path: Path, text: str = "a: 1\n") -> None:
    """Write ``path`` with a modification time one second later than it had (or now)."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


class Watched:
    """A config file, a directory of two files and a watcher on a Clock that counts reloads."""

    def __init__(self, root: Path) -> None:
        self.file = root / "main.yaml"
        self.dir = root / "conf.d"
        self.dir.mkdir()
        touch(self.file)
        touch(self.dir / "a.yaml")
        touch(self.dir / "b.yml")
        self.clock = Clock()
        self.reloads = 0
        self.watcher = ConfigWatcher(str(self.file), str(self.dir), self.reload, self.clock,
                                     INTERVAL)
        self.watcher.start()

    def reload(self) -> None:
        """Count a reload."""
        self.reloads += 1

    def polls(self, count: int) -> int:
        """Let ``count`` poll intervals pass; the reloads so far."""
        for _ in range(count):
            self.clock.advance(INTERVAL)
        return self.reloads


def test_nothing_changed_no_reload(tmp_path: Path) -> None:
    """Polls of unchanged sources never reload; the first poll is a baseline."""
    w = Watched(tmp_path)
    assert w.polls(5) == 0


def test_a_burst_of_changes_reloads_once(tmp_path: Path) -> None:
    """Changes seen by consecutive polls reload once, at the first quiet poll after them."""
    w = Watched(tmp_path)
    touch(w.file, "b: 2\n")
    assert w.polls(1) == 0
    touch(w.dir / "a.yaml", "c: 3\n")
    touch(w.dir / "new.yaml")
    assert w.polls(1) == 0
    assert w.polls(1) == 1
    assert w.polls(3) == 1


def test_added_and_removed_files_count(tmp_path: Path) -> None:
    """A new YAML file or a removed one is a change; a non-YAML file is not."""
    w = Watched(tmp_path)
    touch(w.dir / "notes.txt")
    assert w.polls(2) == 0
    touch(w.dir / "c.yaml")
    assert w.polls(2) == 1
    (w.dir / "b.yml").unlink()
    assert w.polls(2) == 2


def test_vanished_sources_are_not_a_change_until_they_return(tmp_path: Path) -> None:
    """A missing file or an emptied directory keeps the running config; their return reloads."""
    w = Watched(tmp_path)
    w.file.unlink()
    for name in ("a.yaml", "b.yml"):
        (w.dir / name).unlink()
    assert w.polls(3) == 0
    touch(w.dir / "a.yaml", "back: 1\n")
    assert w.polls(2) == 1
    touch(w.file, "back: 2\n")
    assert w.polls(2) == 2


def test_stop_stops_polling(tmp_path: Path) -> None:
    """After stop() no poll runs and nothing reloads."""
    w = Watched(tmp_path)
    w.watcher.stop()
    touch(w.file, "b: 2\n")
    assert w.polls(3) == 0
    assert not w.clock.getDelayedCalls()
