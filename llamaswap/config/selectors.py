"""``selectors`` (SPEC 2.11): virtual model ids that pick one of their targets."""

from __future__ import annotations

from collections.abc import Mapping

from llamaswap.config.fields import Section
from llamaswap.config.filters import jsonable
from llamaswap.config.gofmt import format_value
from llamaswap.config.matrix import can_run_together
from llamaswap.config.model import (
    GroupConfig,
    MatrixConfig,
    RouterConfig,
    SelectorConfig,
    frozen_mapping,
)
from llamaswap.config.peers import Names

STRATEGIES = ("warm", "pin", "spillover")


def _check_spillover_group(s: Section, sel_id: str, local: list[str],
                           groups: Mapping[str, GroupConfig]) -> None:
    found: dict[str, GroupConfig] = {}
    for target in local:
        group = next((g for g in groups.values() if target in g.members), None)
        if group is None:
            s.problems.add(f"selectors.{sel_id}", f'target "{target}" is not in a routing group')
            return
        found[target] = group
    ids = {g.id for g in found.values()}
    if len(ids) > 1:
        s.problems.add(f"selectors.{sel_id}", "spillover targets must share one routing group")
    elif next(iter(found.values())).swap:
        s.problems.add(f"selectors.{sel_id}",
                       "spillover targets must share a group with swap: false")


def _check_spillover(s: Section, sel_id: str, local: list[str], router: RouterConfig) -> None:
    if len(set(local)) < 2:
        return
    matrix: MatrixConfig | None = router.settings.get("matrix")
    if router.use == "matrix":
        if matrix is not None and not can_run_together(matrix, frozenset(local)):
            s.bad("targets", "must all appear together in one expanded matrix set")
    elif router.use == "group":
        _check_spillover_group(s, sel_id, local, router.settings.get("groups", {}))


def _read_selector(s: Section, sel_id: str, names: Names, router: RouterConfig,
                   selector_ids: set[str]) -> SelectorConfig | None:
    strategy = s.get_str("strategy").strip()
    if not strategy:
        s.bad("strategy", "is required")
    elif strategy not in STRATEGIES:
        s.bad("strategy", f'unknown strategy "{strategy}" (valid: warm, pin, spillover)')
    targets = s.get_str_list("targets")
    if not targets:
        s.bad("targets", "must contain at least one entry")
    settings = s.section("settings")
    spillover = settings.get_int("spillover", 1)
    if strategy == "spillover" and spillover < 1:
        settings.bad("spillover", "must be >= 1")
    resolved: list[str] = []
    local: list[str] = []
    for i, target in enumerate(targets):
        where = f"{s.path}.targets[{i}]"
        if target in selector_ids:
            s.problems.add(where, f'references selector "{target}"; selector chaining is not '
                           "supported")
            continue
        model = names.resolve(target)
        if model is None:
            s.problems.add(where, f'references unknown model "{target}"')
            continue
        is_local = names.local(target) is not None
        if strategy == "warm" and not is_local:
            s.problems.add(where, 'must resolve to a local model for strategy "warm"')
        if strategy == "spillover" and model in resolved:
            s.bad("targets", f'contains duplicate resolved model "{model}"')
        resolved.append(model)
        if is_local:
            local.append(model)
    if strategy == "spillover":
        _check_spillover(s, sel_id, local, router)
    return SelectorConfig(
        id=sel_id,
        strategy=strategy,
        targets=tuple(targets),
        spillover=max(spillover, 1),
        name=s.get_str("name").strip(),
        description=s.get_str("description").strip(),
        unlisted=s.get_bool("unlisted", False),
        metadata=frozen_mapping(jsonable(s.get_map("metadata"))),
    )


def read_selectors(top: Section, names: Names, router: RouterConfig) -> dict[str, SelectorConfig]:
    """Every selector, checked against model ids, aliases, peers and the router."""
    section = top.section("selectors")
    ids = {format_value(k) for k in section.raw}
    fqns = names.fqns()
    out: dict[str, SelectorConfig] = {}
    for key in section.raw:
        sel_id = format_value(key)
        if not sel_id.strip():
            section.problems.add("selectors", "selector names cannot be empty")
            continue
        s = section.section(key)
        if sel_id in names.models:
            section.bad(sel_id, f'name conflicts with model ID "{sel_id}"')
        elif sel_id in names.aliases:
            section.bad(sel_id, f'name conflicts with model alias "{sel_id}"')
        if sel_id in fqns:
            section.bad(sel_id, f'selector ID "{sel_id}" conflicts with fully qualified peer '
                        "model name")
        selector = _read_selector(s, sel_id, names, router, ids)
        if selector is not None:
            out[sel_id] = selector
    return out
