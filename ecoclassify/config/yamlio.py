"""Strict YAML reading: ``yaml.SafeLoader`` with duplicate keys refused, YAML 1.2 numbers and
booleans, and limits on size, nesting and aliases.

PyYAML implements YAML 1.1, where ``1e-3`` (no dot) is a *string* and ``no``, ``yes``, ``on``,
``off`` are booleans: every user writes learning rates the first way, and a label or a class
called ``no`` must stay a string. So numbers and booleans follow YAML 1.2 here (only
``true``/``false`` in any case are booleans; boolean config keys still accept ``yes``/``no``,
see the config validation). A config is small, shallow text: a file over ``MAX_CONFIG_BYTES``,
nesting deeper than ``MAX_DEPTH``, aliases that expand to more than ``MAX_NODES`` values (the
"billion laughs" pattern) and NUL characters are refused with a ``ConfigError`` before they
can cost minutes, gigabytes or a ``RecursionError``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import yaml

from ecoclassify.errors import ConfigError

#: Largest config file or text read, in bytes (1 MiB; real configs are a few kB).
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of mappings and lists (real configs nest about 5 levels).
MAX_DEPTH = 100
#: Most values (mappings, lists and scalars) a config may hold once its aliases are expanded.
MAX_NODES = 100_000

_BOOL_1_2 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictSafeLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses duplicate mapping keys, reads ``1e-3`` as a float and ``no`` as
    a string, and refuses nesting deeper than ``MAX_DEPTH`` and NUL characters in values."""

    _depth = 0

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{mark.name} nests mappings or lists too deeply: a config may nest at most {MAX_DEPTH} levels. "
                    f"Received: more than {MAX_DEPTH} levels (line {mark.line + 1})")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode) and "\0" in node.value:
            raise ConfigError(f"{node.start_mark.name} has a NUL character (\\0) in a value on line "
                              f"{node.start_mark.line + 1}; no file name, label or setting may contain one. "
                              f"Received: {node.value!r}")
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                first = seen[key]
                raise ConfigError(
                    f"duplicate key {key!r} in {key_node.start_mark.name} "
                    f"(line {key_node.start_mark.line + 1}; first defined on line {first.line + 1}). "
                    "Each key may appear only once in a mapping."
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# Replace the YAML 1.1 float resolver with the 1.2 one on our loader only.
StrictSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictSafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))
# The same for booleans: YAML 1.1's yes/no/on/off (and y/n) stay strings.
StrictSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in StrictSafeLoader.yaml_implicit_resolvers.items()
}
StrictSafeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_1_2, list("tTfF"))


def _expanded_size(node: yaml.Node, source: str) -> int:
    """How many values ``node`` holds with every alias expanded, stopping early past ``MAX_NODES``.

    Aliases share one node, so the composed document stays small however large its expansion;
    sizes are memoised per node, which makes this linear in the document, not in the expansion.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(item: yaml.Node) -> int:
        key = id(item)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise ConfigError(f"{source} has an alias inside the value it refers to (line {item.start_mark.line + 1}): "
                              "a config cannot contain itself")
        visiting.add(key)
        total = 1
        if isinstance(item, yaml.SequenceNode):
            children: list[yaml.Node] = list(item.value)
        elif isinstance(item, yaml.MappingNode):
            children = [part for pair in item.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                break
        visiting.discard(key)
        sizes[key] = total
        return total

    return size(node)


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text strictly (safe constructors only, duplicate keys refused).

    Raises:
        ConfigError: The text is not valid YAML, repeats a key, contains a NUL character, or is
            larger, deeper or (through aliases) bigger than the limits of this module.
    """
    if len(text) > MAX_CONFIG_BYTES:  # characters, at least as strict as bytes for what matters
        raise ConfigError(f"{source} is too large for a config: at most {MAX_CONFIG_BYTES:,} bytes (1 MiB). "
                          f"Received: {len(text):,} characters")
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(f"{source} contains a NUL character (line {line}): a config must be UTF-8 text "
                          "(is it a binary file, or saved as UTF-16?)")
    try:
        loader = StrictSafeLoader(text)  # already checks for control characters
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    loader.name = source  # so error marks name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, source) > MAX_NODES:
            raise ConfigError(
                f"{source} expands to more than {MAX_NODES:,} values through its aliases (*name), far more than "
                f"any config needs (the \"billion laughs\" pattern); a config may hold at most {MAX_NODES:,}. "
                "Write the values out instead of repeating aliases")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read and strictly parse a YAML file.

    Raises:
        ConfigError: The file is missing, unreadable or not valid YAML.
    """
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:  # before reading: a config path pointing at a huge file
            raise ConfigError(f"{path} is too large for a config: at most {MAX_CONFIG_BYTES:,} bytes (1 MiB). "
                              f"Received: {size:,} bytes")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return load_yaml_text(text, str(path))


def dump_yaml(data: Any) -> str:
    """Serialise plain data (dicts, lists, scalars) as block-style YAML, keys in given order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
