"""Strict YAML reading: ``yaml.SafeLoader`` with duplicate keys refused and ``1e-3`` read as a float.

PyYAML implements YAML 1.1, where ``1e-3`` (no dot) is a *string*; every user writes
learning rates that way, so the float resolver below follows YAML 1.2 for numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ecoclassify.errors import ConfigError

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictSafeLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses duplicate mapping keys and reads ``1e-3`` as a float."""

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


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text strictly (safe constructors only, duplicate keys refused).

    Raises:
        ConfigError: The text is not valid YAML or repeats a key.
    """
    loader = StrictSafeLoader(text)
    loader.name = source  # so error marks name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
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
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return load_yaml_text(text, str(path))


def dump_yaml(data: Any) -> str:
    """Serialise plain data (dicts, lists, scalars) as block-style YAML, keys in given order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
