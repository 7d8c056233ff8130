"""``load_config``: YAML text to a validated, frozen Config (SPEC 2.1's pipeline)."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from llamaswap.config.env import substitute_env
from llamaswap.config.errors import ConfigError
from llamaswap.config.expand import check_top_leftovers, expand_document, sort_ids
from llamaswap.config.fields import Section
from llamaswap.config.model import Config, ModelConfig, frozen_mapping
from llamaswap.config.models import ModelDefaults, read_model, resolve_aliases
from llamaswap.config.peers import Names, check_namespace, read_peers
from llamaswap.config.problems import Problems
from llamaswap.config.profiles import read_profiles
from llamaswap.config.routing import read_routing
from llamaswap.config.selectors import read_selectors
from llamaswap.config.sources import list_sources, merge
from llamaswap.config.toplevel import (
    read_api_keys,
    read_client_timeouts,
    read_globals,
    read_ignore_paths,
    read_logging,
    read_performance,
    read_store,
    read_trusted_proxies,
    read_ui,
)
from llamaswap.config.typos import KNOWN_KEYS, typo_warnings
from llamaswap.config.yamlio import parse_yaml


def _installed_routers() -> set[str]:
    from llamaswap.plugins import swapper_factories

    return set(swapper_factories())


def _installed_schedulers() -> set[str]:
    from llamaswap.plugins import scheduler_factories

    return set(scheduler_factories())


def _preload(top: Section, resolve: Mapping[str, str], problems: Problems) -> tuple[str, ...]:
    hooks = top.section("hooks").section("on_startup")
    out: list[str] = []
    for name in hooks.get_str_list("preload"):
        name = name.strip()
        if not name:
            continue
        model_id = resolve.get(name)
        if model_id is None:
            problems.warn(hooks.at("preload"), f"{name!r} is not a local model or alias; "
                          "it is not preloaded")
        elif model_id not in out:
            out.append(model_id)
    return tuple(out)


def _build(doc: dict[str, Any], problems: Problems, routers: Collection[str],
           schedulers: Collection[str]) -> Config:
    problems.warnings.extend(typo_warnings(doc))
    expanded = expand_document(doc, problems)
    check_top_leftovers(expanded.doc, KNOWN_KEYS, problems)
    top = Section(expanded.doc, "", problems)
    globals_ = read_globals(top)
    defaults = ModelDefaults(
        ttl=globals_["global_ttl"],
        unload_timeout=globals_["unload_timeout"],
        health_check_timeout=globals_["health_check_timeout"],
        send_loading_state=globals_["send_loading_state"],
    )
    order = sort_ids(list(expanded.models))
    models: dict[str, ModelConfig] = {
        mid: read_model(mid, expanded.models[mid], expanded.ports.get(mid), defaults, problems)
        for mid in order
    }
    models, aliases = resolve_aliases(models, order, problems)
    resolve = {**aliases, **{m: m for m in models}}
    routing = read_routing(top, models, resolve, routers, schedulers)
    peers = read_peers(top)
    selector_ids = frozenset(str(k) for k in top.get_map("selectors"))
    names = Names(models=models, aliases=aliases, peers=peers, selectors=selector_ids)
    check_namespace(names, top)
    selectors = read_selectors(top, names, routing.router)
    profiles = read_profiles(top, names)
    config = Config(
        models=frozen_mapping({m: models[m] for m in order}),
        aliases=frozen_mapping(aliases),
        start_port=expanded.start_port,
        store=read_store(top),
        ui=read_ui(top),
        performance=read_performance(top),
        api_keys=read_api_keys(top),
        preload=_preload(top, resolve, problems),
        routing=routing,
        peers=frozen_mapping(peers),
        profiles=frozen_mapping(profiles),
        selectors=frozen_mapping(selectors),
        ignore_paths=read_ignore_paths(top),
        trusted_proxies=read_trusted_proxies(top),
        client_timeouts=read_client_timeouts(top),
        **read_logging(top),
        **globals_,
    )
    problems.raise_if_any()
    return _with_warnings(config, problems.warnings)


def _with_warnings(config: Config, warnings: list[str]) -> Config:
    import attrs

    return attrs.evolve(config, warnings=tuple(warnings))


def _parse(text: str, source: str, environ: Mapping[str, str] | None) -> dict[str, Any] | None:
    """One source: env macros, then YAML; None for an empty document."""
    problems = Problems()
    text = substitute_env(text, os.environ if environ is None else environ, problems)
    if problems:
        raise ConfigError(f"{source}: {line}" for line in problems.lines)
    doc = parse_yaml(text, source)
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: top-level YAML must be a mapping")
    return doc


def _config(doc: dict[str, Any], source: str, routers: Collection[str] | None,
            schedulers: Collection[str] | None) -> Config:
    try:
        return _build(
            doc,
            Problems(),
            _installed_routers() if routers is None else routers,
            _installed_schedulers() if schedulers is None else schedulers,
        )
    except ConfigError:
        raise
    except Exception as exc:  # never let anything else escape
        raise ConfigError(f"{source}: unexpected error while loading: "
                          f"{type(exc).__name__}: {exc}") from exc


def load_config_text(
    text: str,
    source: str = "<string>",
    *,
    environ: Mapping[str, str] | None = None,
    installed_routers: Collection[str] | None = None,
    installed_schedulers: Collection[str] | None = None,
) -> Config:
    """Parse configuration text into a Config; every problem raises ConfigError.

    ``environ`` defaults to ``os.environ``; the installed router and scheduler names
    default to the Twisted plugins that are discoverable.
    """
    with _no_cycle_collection():
        try:
            doc = _parse(text, source, environ)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{source}: unexpected error while parsing: "
                              f"{type(exc).__name__}: {exc}") from exc
        return _config(doc or {}, source, installed_routers, installed_schedulers)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while a config is built.

    Loading allocates a few hundred long-lived objects per model; the collector would walk
    them again and again as they pile up (half the time of a 10,000-model load). Reference
    counting still frees garbage at once; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None


def load_config(
    path: str,
    *,
    environ: Mapping[str, str] | None = None,
    installed_routers: Collection[str] | None = None,
    installed_schedulers: Collection[str] | None = None,
) -> Config:
    """Read and parse a configuration file (see ``load_config_text``)."""
    return load_config_text(
        _read(path),
        path,
        environ=environ,
        installed_routers=installed_routers,
        installed_schedulers=installed_schedulers,
    )


def load_config_sources(
    config_path: str | None,
    config_dir: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    installed_routers: Collection[str] | None = None,
    installed_schedulers: Collection[str] | None = None,
) -> Config:
    """The config file plus every YAML file of ``config_dir``, merged (SPEC 1.2)."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    label = config_path or config_dir or "<no source>"
    try:
        for source in list_sources(config_path, config_dir):
            doc = _parse(_read(source), source, environ)
            if doc is not None:
                merge(merged, doc, source, origins=origins)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{label}: unexpected error while reading: "
                          f"{type(exc).__name__}: {exc}") from exc
    return _config(merged, label, installed_routers, installed_schedulers)
