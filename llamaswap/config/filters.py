"""``filters`` blocks of models and peers (SPEC 2.5), and JSON-able value cleanup."""

from __future__ import annotations

from typing import Any

from llamaswap.config.fields import Section
from llamaswap.config.gofmt import format_value
from llamaswap.config.model import Filters, frozen_mapping

PROTECTED = "model"


def jsonable(value: Any) -> Any:
    """``value`` with every mapping key turned into a string (JSON needs string keys)."""
    if isinstance(value, dict):
        return {format_value(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def parse_strip_params(text: str) -> tuple[str, ...]:
    """Split on commas, trim, drop empty entries, duplicates and ``model``; sorted."""
    names = {part.strip() for part in text.split(",")}
    return tuple(sorted(n for n in names if n and n != PROTECTED))


def _params(section: Section, key: str) -> dict[str, Any]:
    raw = section.get_map(key)
    return {k: v for k, v in jsonable(raw).items() if k != PROTECTED}


def read_filters(section: Section) -> Filters:
    """Parse a ``filters`` section (``strip_params`` is the legacy spelling)."""
    strip = section.get_str("stripParams")
    if not strip.strip():
        strip = section.get_str("strip_params")
    by_id: dict[str, Any] = {}
    by_id_section = section.section("setParamsByID")
    for key, value in by_id_section.raw.items():
        name = format_value(key)
        params = Section(value, by_id_section.at(name), section.problems)
        by_id[name] = frozen_mapping(
            {k: v for k, v in jsonable(params.raw).items() if k != PROTECTED}
        )
    return Filters(
        strip_params=parse_strip_params(strip),
        set_params=frozen_mapping(_params(section, "setParams")),
        set_params_by_id=frozen_mapping(by_id),
    )
