"""Config reload: a good file replaces the running App, a bad one keeps the old."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor

from llamaswap.config import load_config, load_config_sources
from llamaswap.service import LlamaSwapService
from llamaswap.testing.ports import free_port_block
from llamaswap.testing.service import service_url

MODEL = """
  {name}:
    cmd: {py} -m llamaswap.testing.responder --port ${{PORT}} --model {name}
"""


def write_config(path: Path, start_port: int, *names: str) -> None:
    """Write a config with one responder model per name."""
    models = "".join(MODEL.format(name=n, py=sys.executable) for n in names)
    path.write_text(f"startPort: {start_port}\nmodels:{models}")




def started_service(path: Path) -> LlamaSwapService:
    """A service started from the config file ``path`` on a free loopback port."""
    svc = LlamaSwapService(
        config_path=str(path), config=load_config(str(path)),
        listen="tcp:0:interface=127.0.0.1", watch_config=False, reactor=reactor,
    )
    svc.startService()
    return svc


async def model_ids(base: str) -> list[str]:
    """The ids /v1/models lists."""
    resp = await treq.get(base + "/v1/models")
    return [m["id"] for m in json.loads(await resp.content())["data"]]


@pytest_twisted.ensureDeferred
async def test_reload_switches_config_and_stops_old_models(tmp_path: Path) -> None:
    """After a reload the new models are served and the old App's processes are stopped."""
    path = tmp_path / "config.yaml"
    start = free_port_block()
    write_config(path, start, "one")
    svc = started_service(path)
    try:
        base = service_url(svc)
        resp = await treq.post(base + "/v1/completions", json={"model": "one", "prompt": "x"})
        assert resp.code == 200
        await resp.content()
        old = svc.get_app()
        assert old.upstreams["one"].state == "ready"
        write_config(path, start, "one", "two")
        await svc.reload()
        assert svc.get_app() is not old
        assert old.upstreams["one"].state in ("stopped", "shutdown")
        assert await model_ids(base) == ["one", "two"]
        resp = await treq.post(base + "/v1/completions", json={"model": "two", "prompt": "x"})
        assert resp.code == 200
        await resp.content()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_bad_reload_keeps_running_config(tmp_path: Path) -> None:
    """A reload of a broken file logs the problem and keeps serving the old configuration."""
    path = tmp_path / "config.yaml"
    write_config(path, free_port_block(), "one")
    svc = started_service(path)
    try:
        before = svc.get_app()
        path.write_text("models:\n  one:\n    ttl: -5\n")
        await svc.reload()
        assert svc.get_app() is before
        assert await model_ids(service_url(svc)) == ["one"]
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_reload_to_an_unreadable_store_keeps_running_config(tmp_path: Path) -> None:
    """A new store.path SQLite cannot open aborts the reload with a warning naming the key."""
    from twisted.logger import capturedLogs, formatEvent

    path = tmp_path / "config.yaml"
    start = free_port_block()
    write_config(path, start, "one")
    svc = started_service(path)
    try:
        before = svc.get_app()
        store = tmp_path / "activity.db"
        store.write_bytes(b"not a database, " * 100)
        write_config(path, start, "one", "two")
        with path.open("a") as config:
            config.write(f"store:\n  path: {store}\n")
        with capturedLogs() as events:
            await svc.reload()
        assert svc.get_app() is before
        assert await model_ids(service_url(svc)) == ["one"]
        warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
        assert warnings == [
            f"failed to reload config: store.path: {store} cannot be opened: "
            "file is not a database"
        ]
    finally:
        await svc.stopService()


def _bump(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and move its mtime on, so a poll within the same tick sees it."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def _poll_until_reloaded(svc: LlamaSwapService) -> None:
    """Two polls of the watcher: the first sees the change, the quiet second one reloads."""
    assert svc.watcher is not None
    assert svc.watcher.poll() is None
    await svc.watcher.poll()


@pytest_twisted.ensureDeferred
async def test_config_dir_watch_add_edit_break_remove(tmp_path: Path) -> None:
    """--config plus a --config-dir of two files: added, edited (valid, broken), removed files."""
    from twisted.logger import capturedLogs, formatEvent

    def models(name: str) -> str:
        """A ``models:`` section with one responder model."""
        return f"models:{MODEL.format(name=name, py='${py}')}"

    main = tmp_path / "main.yaml"
    main.write_text(f"startPort: {free_port_block()}\nmacros:\n  py: {sys.executable}\n"
                    + models("one"))
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-two.yaml").write_text(models("two"))
    (conf / "20-three.yml").write_text(models("three"))
    svc = LlamaSwapService(
        config_path=str(main), config_dir=str(conf),
        config=load_config_sources(str(main), str(conf)),
        listen="tcp:0:interface=127.0.0.1", watch_config=True, reactor=reactor,
    )
    svc.startService()
    try:
        base = service_url(svc)
        assert await model_ids(base) == ["one", "three", "two"]
        _bump(conf / "30-four.yaml", models("four"))
        await _poll_until_reloaded(svc)
        assert await model_ids(base) == ["four", "one", "three", "two"]
        _bump(conf / "30-four.yaml", models("five"))
        await _poll_until_reloaded(svc)
        assert await model_ids(base) == ["five", "one", "three", "two"]
        before = svc.get_app()
        _bump(conf / "30-four.yaml", models("two"))
        with capturedLogs() as events:
            await _poll_until_reloaded(svc)
        assert svc.get_app() is before
        warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
        assert warnings == [
            f'failed to reload config: duplicate models "two" found in {conf / "30-four.yaml"} '
            f"(already defined in {conf / '10-two.yaml'})"
        ]
        (conf / "30-four.yaml").unlink()
        (conf / "20-three.yml").unlink()
        await _poll_until_reloaded(svc)
        assert await model_ids(base) == ["one", "two"]
    finally:
        await svc.stopService()
