"""The macro pipeline on the untyped tree: comments, default proxy, macros, ``${PORT}``
and leftover references (SPEC 2.1 steps 2-7)."""

from __future__ import annotations

from typing import Any

import attrs

from llamaswap.config.gofmt import format_value
from llamaswap.config.macros import (
    Macro,
    expand,
    expand_string,
    leftover_refs,
    model_scope,
    read_macros,
    strip_comment_lines,
)
from llamaswap.config.problems import Problems, describe

DEFAULT_PROXY = "http://localhost:${PORT}"
DEFAULT_START_PORT = 5800
MAX_PORT = 65535
# Model fields whose leftover references get the "found in <model>.<field>" wording.
_STRING_FIELDS = ("cmd", "cmdStop", "proxy", "checkEndpoint", "name", "description")
# Only these model keys are decoded, so only they are checked for leftover references.
MODEL_KEYS = frozenset({
    "cmd", "cmdStop", "proxy", "aliases", "env", "checkEndpoint", "ttl", "unloadTimeout",
    "unlisted", "useModelName", "name", "description", "concurrencyLimit", "filters",
    "metadata", "sendLoadingState", "timeouts", "compat", "capabilities", "healthCheckTimeout",
    "memory",
})


@attrs.define
class Expanded:
    """The document after macro expansion, with the allocated ports."""

    doc: dict[str, Any]
    models: dict[str, dict[str, Any]]
    ports: dict[str, int]
    start_port: int


def sort_ids(ids: list[str]) -> list[str]:
    """Model ids in byte-wise order, as Go sorts strings."""
    return sorted(ids, key=lambda s: s.encode("utf-8", "surrogatepass"))


def _models(raw: Any, problems: Problems) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("models", f"expected a mapping of model ids to models, got {describe(raw)}")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, model in raw.items():
        model_id = format_value(key)
        if model is None:
            model = {}
        if not isinstance(model, dict):
            problems.add(f"models.{model_id}", f"expected a mapping, got {describe(model)}")
            continue
        if not model_id.strip():
            problems.add("models", "model ids cannot be empty")
            continue
        out[model_id] = dict(model)
    return out


def _prepare_model(model: dict[str, Any]) -> None:
    for key in ("cmd", "cmdStop"):
        if isinstance(model.get(key), str):
            model[key] = strip_comment_lines(model[key])
    if model.get("proxy") is None:
        model["proxy"] = DEFAULT_PROXY


def _start_port(doc: dict[str, Any], problems: Problems) -> int:
    value = doc.get("startPort")
    if value is None:
        return DEFAULT_START_PORT
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add("startPort", f"expected an integer, got {describe(value)}")
        return DEFAULT_START_PORT
    if value < 1 or value > MAX_PORT:
        problems.add("startPort", f"must be between 1 and {MAX_PORT}, got {value}")
        return DEFAULT_START_PORT
    return value


def _expand_by_id_keys(model_id: str, model: dict[str, Any], scope: list[Macro],
                       problems: Problems) -> None:
    filters = model.get("filters")
    if not isinstance(filters, dict) or not isinstance(filters.get("setParamsByID"), dict):
        return
    path = f"models.{model_id}.filters.setParamsByID"
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in filters["setParamsByID"].items():
        raw_key = format_value(key)
        new_key = format_value(expand_string(raw_key, scope))
        for _, name in leftover_refs(new_key, ""):
            problems.add(path, f"unknown macro '${{{name}}}' in key {raw_key!r}")
        if new_key in out:
            problems.add(
                path, f'keys "{origin[new_key]}" and "{raw_key}" resolve to the same value'
            )
            continue
        out[new_key] = value
        origin[new_key] = raw_key
    filters = dict(filters)
    filters["setParamsByID"] = out
    model["filters"] = filters


def _check_model_leftovers(model_id: str, model: dict[str, Any], problems: Problems) -> None:
    for field, value in model.items():
        if field not in MODEL_KEYS:
            continue
        refs = leftover_refs(value, str(field))
        for path, name in refs:
            if (name == "PID" and field == "cmdStop") or (name == "PORT" and path == "proxy"):
                continue  # ${PID} is filled at stop time; proxy ${PORT} is reported already
            where = f"models.{model_id}.{path}"
            if name in ("PORT", "MODEL_ID") and field in _STRING_FIELDS:
                problems.add(
                    where,
                    f"macro '${{{name}}}' should have been substituted "
                    f"(${{PORT}} is only available when cmd uses it)",
                )
            else:
                problems.add(where, f"unknown macro '${{{name}}}'")


def expand_document(doc: dict[str, Any], problems: Problems) -> Expanded:
    """Run macro expansion and port allocation over a parsed document."""
    global_macros = read_macros(doc.get("macros"), "macros", problems)
    models = _models(doc.get("models"), problems)
    own_macros: dict[str, list[Macro]] = {}
    for model_id, model in models.items():
        own_macros[model_id] = read_macros(
            model.pop("macros", None), f"models.{model_id}.macros", problems
        )
        _prepare_model(model)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("models", "macros"):
            continue
        out[key] = expand(value, global_macros)
    start_port = _start_port(out, problems)
    ports: dict[str, int] = {}
    next_port = start_port
    for model_id in sort_ids(list(models)):
        scope = model_scope(model_id, global_macros, own_macros[model_id])
        model = expand(models[model_id], scope)
        cmd = model.get("cmd")
        uses_port = isinstance(cmd, str) and "${PORT}" in cmd
        if uses_port:
            if next_port > MAX_PORT:
                problems.add(
                    f"models.{model_id}.cmd", f"no port left for ${{PORT}} above {MAX_PORT}"
                )
            ports[model_id] = next_port
            model = expand(model, [("PORT", next_port)])
            scope = [*scope, ("PORT", next_port)]
            next_port += 1
        elif isinstance(model.get("proxy"), str) and "${PORT}" in model["proxy"]:
            problems.add(
                f"models.{model_id}.proxy",
                "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used "
                "in cmd (set proxy explicitly)",
            )
        _expand_by_id_keys(model_id, model, scope, problems)
        models[model_id] = model
        _check_model_leftovers(model_id, model, problems)
    return Expanded(doc=out, models=models, ports=ports, start_port=start_port)


def check_top_leftovers(doc: dict[str, Any], known: frozenset[str], problems: Problems) -> None:
    """Report ``${X}`` references left in the known top-level sections."""
    for key, value in doc.items():
        if key not in known or key in ("models", "macros"):
            continue
        for path, name in leftover_refs(value, str(key)):
            problems.add(path, f"unknown macro '${{{name}}}'")
