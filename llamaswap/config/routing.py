"""``routing`` and the legacy top-level ``groups``/``matrix`` (SPEC 2.6-2.8)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from llamaswap.config.expand import sort_ids
from llamaswap.config.fields import Section
from llamaswap.config.filters import jsonable
from llamaswap.config.gofmt import format_value
from llamaswap.config.matrix import read_matrix
from llamaswap.config.model import (
    GroupConfig,
    MatrixConfig,
    ModelConfig,
    RouterConfig,
    RoutingConfig,
    SchedulerConfig,
    frozen_mapping,
)
from llamaswap.memory import parse_margin

DEFAULT_GROUP = "(default)"
DEFAULT_ROUTER = "group"
DEFAULT_SCHEDULER = "serial"
SERIAL_WARNING = (
    "routing: the configured groups/matrix/memory router let models run together, but the default "
    "scheduler 'serial' runs one model at a time and ignores that; set "
    "'routing.scheduler.use: fifo' to keep llama-swap's behaviour (or name 'serial' "
    "explicitly to silence this warning)"
)


def read_groups(section: Section, models: Mapping[str, ModelConfig]) -> dict[str, GroupConfig]:
    """Groups with membership checks, plus the implicit ``(default)`` group."""
    groups: dict[str, GroupConfig] = {}
    owner: dict[str, str] = {}
    for key in section.raw:
        gid = format_value(key)
        g = section.section(key)
        if gid == DEFAULT_GROUP:
            section.bad(gid, f"the group id '{DEFAULT_GROUP}' is reserved")
            continue
        members: list[str] = []
        for member in g.get_str_list("members"):
            if member in members:
                g.bad("members", f"duplicate model member {member} found in group: {gid}")
            elif member in owner:
                g.bad("members", f"model member {member} is used in multiple groups: "
                      f"{owner[member]} and {gid}")
            elif member not in models:
                section.problems.warn(g.at("members"), f"{member!r} is not a model id; ignored")
            else:
                owner[member] = gid
                members.append(member)
        groups[gid] = GroupConfig(
            id=gid,
            swap=g.get_bool("swap", True),
            exclusive=g.get_bool("exclusive", True),
            persistent=g.get_bool("persistent", False),
            members=tuple(members),
        )
    rest = sort_ids([m for m in models if m not in owner])
    groups[DEFAULT_GROUP] = GroupConfig(id=DEFAULT_GROUP, members=tuple(rest))
    return groups


def _router_name(router: Section, installed: Collection[str]) -> str:
    use = router.get_str("use").strip() or DEFAULT_ROUTER
    if use not in installed:
        listed = ", ".join(sorted(installed)) or "none"
        router.bad("use", f'unknown router "{use}" (installed: {listed})')
    return use


def read_router(top: Section, models: Mapping[str, ModelConfig],
                installed: Collection[str]) -> RouterConfig:
    """The router name and its settings, from ``routing.router`` or the legacy keys."""
    router = top.section("routing").section("router")
    settings = router.section("settings")
    new_style = router.has("use") or settings.has("groups") or settings.has("matrix")
    legacy = top.has("groups") or top.has("matrix")
    if legacy and new_style:
        top.bad("routing.router", "config uses both the legacy top-level 'matrix'/'groups' "
                "keys and the new 'routing.router' block; please migrate the top-level keys "
                "into 'routing.router' and remove them")
    if legacy:
        if top.has("groups") and top.has("matrix"):
            top.problems.add("", "config cannot use both 'groups' and 'matrix'")
        use = "matrix" if top.has("matrix") else DEFAULT_ROUTER
        if use not in installed:
            listed = ", ".join(sorted(installed)) or "none"
            top.bad("matrix" if use == "matrix" else "groups",
                    f'needs the "{use}" router, which is not installed (installed: {listed})')
        groups_section, matrix_section = top.section("groups"), top.section("matrix")
    else:
        use = _router_name(router, installed)
        groups_section, matrix_section = settings.section("groups"), settings.section("matrix")
        if use == "matrix" and not settings.has("matrix"):
            router.bad("use", "is 'matrix' but routing.router.settings.matrix is not set")
        if use == DEFAULT_ROUTER and settings.has("matrix"):
            top.problems.warn(settings.at("matrix"), "ignored: routing.router.use is 'group' "
                              "(set 'use: matrix' to use it)")
    matrix: MatrixConfig | None = None
    if use == "matrix":
        if legacy or settings.has("matrix"):
            matrix = read_matrix(matrix_section, models)
    elif use != DEFAULT_ROUTER and matrix_section.raw:
        matrix = read_matrix(matrix_section, models)  # a third-party router may use it
    if use == "memory":
        _check_memory_settings(settings, models)
    out: dict[str, Any] = {
        k: jsonable(v) for k, v in settings.raw.items() if k not in ("groups", "matrix")
    }
    out["groups"] = frozen_mapping(read_groups(groups_section, models))
    out["matrix"] = matrix
    return RouterConfig(use=use, settings=frozen_mapping(out))


def _check_memory_settings(settings: Section, models: Mapping[str, ModelConfig]) -> None:
    """The memory router's ``margin`` (fraction or percentage) and ``pinned`` (model ids)."""
    if settings.has("margin"):
        try:
            parse_margin(settings.raw["margin"])
        except ValueError as error:
            settings.bad("margin", str(error).partition(": ")[2])
    for i, model_id in enumerate(settings.get_str_list("pinned")):
        if model_id not in models:
            settings.problems.add(f"{settings.at('pinned')}[{i}]",
                                  f'references unknown model "{model_id}"')


def read_scheduler(top: Section, resolve: Mapping[str, str],
                   installed: Collection[str]) -> tuple[SchedulerConfig, bool]:
    """``routing.scheduler``; also whether a scheduler was named explicitly."""
    sched = top.section("routing").section("scheduler")
    named = sched.get_str("use").strip()
    use = named or DEFAULT_SCHEDULER
    if use not in installed:
        listed = ", ".join(sorted(installed)) or "none"
        sched.bad("use", f'unknown scheduler "{use}" (installed: {listed})')
    settings_section = sched.section("settings")
    settings: dict[str, Any] = {}
    for key, value in settings_section.raw.items():
        name = format_value(key)
        sub = Section(value, settings_section.at(name), top.problems)
        settings[name] = frozen_mapping(jsonable(sub.raw))
    fifo = settings_section.section("fifo")
    priority = fifo.section("priority")
    for key in priority.raw:
        name = format_value(key)
        priority.get_int(key, 0)
        if name not in resolve:
            priority.bad(name, f'references unknown model "{name}"')
    return SchedulerConfig(use=use, settings=frozen_mapping(settings)), bool(named)


def lets_models_coexist(router: RouterConfig) -> bool:
    """True when the router settings allow two models to run at once."""
    if router.use == "memory" or router.settings.get("matrix") is not None:
        return True
    groups: Mapping[str, GroupConfig] = router.settings.get("groups", {})
    return any(
        (not g.swap or not g.exclusive) for gid, g in groups.items() if gid != DEFAULT_GROUP
    )


def read_routing(top: Section, models: Mapping[str, ModelConfig], resolve: Mapping[str, str],
                 routers: Collection[str], schedulers: Collection[str]) -> RoutingConfig:
    """The whole routing configuration, with the serial-scheduler warning if it applies."""
    router = read_router(top, models, routers)
    scheduler, named = read_scheduler(top, resolve, schedulers)
    if not named and lets_models_coexist(router):
        top.problems.warn("", SERIAL_WARNING)
    return RoutingConfig(router=router, scheduler=scheduler)
