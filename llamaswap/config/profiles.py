"""``profiles`` (SPEC 2.10): named pin sets switched at runtime."""

from __future__ import annotations

from llamaswap.config.fields import Section
from llamaswap.config.gofmt import format_value
from llamaswap.config.model import ProfileConfig, frozen_mapping
from llamaswap.config.peers import Names


def read_profiles(top: Section, names: Names) -> dict[str, ProfileConfig]:
    """Every profile with its pins; each non-empty target must name something routable."""
    raw = top.raw.get("profiles")
    if raw is None:
        return {}
    section = top.section("profiles")
    fqns = names.fqns()
    profiles: dict[str, ProfileConfig] = {}
    for key, value in section.raw.items():
        name = format_value(key)
        if not name.strip():
            section.problems.add("profiles", "profile names cannot be empty")
            continue
        if isinstance(value, list):
            section.bad(name, "profile must be a mapping with description and pins; the "
                        "legacy list syntax is no longer supported")
            continue
        p = section.section(key)
        pins_section = p.section("pins")
        pins: dict[str, str] = {}
        for pin_key, target_raw in pins_section.raw.items():
            pin = format_value(pin_key)
            if not pin.strip():
                pins_section.problems.add(pins_section.path, "pin names cannot be empty")
                continue
            target = pins_section.scalar_str(target_raw, pins_section.at(pin)).strip()
            if pin in fqns:
                pins_section.bad(pin, f'profile {name} pin "{pin}" conflicts with fully '
                                 "qualified peer model name")
            if target and names.resolve(target) is None and target not in names.selectors:
                pins_section.bad(pin, f'references unknown model "{target}"')
            pins[pin] = target
        if not pins_section.raw:
            p.bad("pins", "must contain at least one entry")
        profiles[name] = ProfileConfig(
            name=name, description=p.get_str("description"), pins=frozen_mapping(pins)
        )
    return profiles
