"""YAML parsing that behaves like go-yaml v3 (YAML 1.2 core schema) on top of PyYAML."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llamaswap.config.errors import ConfigError

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_MERGE = re.compile(r"^(?:<<)$")


# libyaml's parser when PyYAML was built with it (the wheels are): it reads a config of
# thousands of models about five times faster than the pure-Python one.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CoreLoader(_SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars: only true/false are booleans,
    no sexagesimal numbers or timestamps; duplicate mapping keys are errors."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def construct_document(self, node: Node) -> Any:
        """Check every mapping for duplicate keys (before merges rewrite them), then build."""
        _check_duplicates(node, set())
        return super().construct_document(node)

    def construct_core_int(self, node: ScalarNode) -> int:
        """An integer the way Go's ParseInt(s, 0, 64) reads it (leading 0 = octal)."""
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        if body[:2] in ("0x", "0o", "0b"):
            return sign * int(body, 0)
        if len(body) > 1 and body.startswith("0") and set(body) <= set("01234567"):
            return sign * int(body, 8)
        return sign * int(body, 10)


def _check_duplicates(node: Node, seen: set[int]) -> None:
    """Raise ConstructorError for a key written twice in one mapping (merge keys excepted)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[tuple[str, Any], Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in keys:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"mapping key {key_node.value!r} already defined at line "
                        f"{keys[key].start_mark.line + 1}",
                        key_node.start_mark,
                    )
                keys[key] = key_node
            _check_duplicates(value_node, seen)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _check_duplicates(item, seen)


CoreLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
CoreLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
CoreLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
CoreLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))
CoreLoader.add_implicit_resolver("tag:yaml.org,2002:merge", _MERGE, ["<"])
CoreLoader.add_constructor("tag:yaml.org,2002:int", CoreLoader.construct_core_int)
# An explicit !!timestamp keeps its text: go-yaml decodes untyped values to strings here.
CoreLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; a syntax error becomes a ConfigError with line and column."""
    try:
        return yaml.load(text, Loader=CoreLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{source}: YAML syntax error{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: YAML syntax error: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML document is nested too deeply") from None
