"""``ecoclassify init``: write a fully commented starter config for a backbone and a data source.

Every key of the schema is written with its default and comments taken from
:mod:`ecoclassify.config.reference` (meaning above the key, type and allowed values beside it), so the
starter file and ``docs/config.md`` always agree with what validation accepts. Only a few values
depend on the backbone and source, and they come from the registry spec rather than from here:
the input size (the spec's ``default_size``), the weights (``imagenet`` where the backbone has
them, ``none`` otherwise) and the training mode (``finetune`` for pretrained backbones with a
fine-tuning boundary, ``scratch`` for random weights).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional, get_args

from ecoclassify.config import Config, DataConfig, ModelConfig, TrainingConfig, default_stages
from ecoclassify.config.reference import LIST_ITEM, WRITTEN_BY_ECOCLASSIFY, KeyDoc, describe_schema, yaml_value
from ecoclassify.errors import ConfigError, RunError
from ecoclassify.config.backbones import get_backbone
from ecoclassify.config.errors import unknown_choice_message
from ecoclassify.files import write_text
from ecoclassify.config.yamlio import load_yaml_text

#: The data sources ``init`` can write a starter for (the schema's choices).
SOURCES: tuple[str, ...] = get_args(DataConfig.model_fields["source"].annotation)

# Placeholders the user must replace; they validate (validation reads no files) but fail at
# `ecoclassify validate` with a message naming the key, which is what a starter should do.
_PLACEHOLDERS: dict[str, dict[str, str]] = {
    "folders": {"data.root": "path/to/images"},
    "csv": {"data.labels": "path/to/labels.csv"},
    "coco": {"data.labels": "path/to/coco_camera_traps.json"},
    "demo": {},
    "camtrapdp": {"data.labels": "path/to/package/datapackage.json"},
}

_WIDTH = 100  # wrap description comments here
_COMMENT_COLUMN = 36  # type comments start here when the key line is short enough


def starter_values(backbone: Optional[str] = None, source: str = "folders") -> dict[str, Any]:
    """The values a starter config sets away from the schema defaults, by key path.

    Args:
        backbone: Registered backbone name; ``None`` takes the schema's default backbone.
        source: One of :data:`SOURCES`.

    Raises:
        ConfigError: ``backbone`` is not registered or ``source`` is not a data source.
    """
    if source not in SOURCES:
        raise ConfigError(unknown_choice_message("source", list(SOURCES), source))
    backbone = backbone or ModelConfig.model_fields["backbone"].default
    spec = get_backbone(backbone, key="backbone")
    weights = "imagenet" if spec.imagenet else "none"
    if spec.pretrained_file:  # pretrained, but from a file Keras cannot download
        weights = f"path/to/{spec.pretrained_file}"
    if weights == "none":
        mode = "scratch"  # random weights: there are no features to keep frozen
    else:
        mode = "finetune" if spec.fine_tune_from else "transfer"
    return {
        "data.source": source,
        "data.image_size": [spec.default_size, spec.default_size],
        "model.backbone": spec.name,
        "model.weights": weights,
        "training.mode": mode,
        **_PLACEHOLDERS[source],
    }


def _plain(text: str) -> str:
    # Markdown code marks read as noise in a YAML comment.
    return text.replace("``", "").replace("`", "")


def _type_comment(key: KeyDoc) -> str:
    """``folders | csv | coco | demo``, ``float, [0, 1)``, ``list of int, 1 to 8 items``..."""
    if " | " in key.allowed:
        choices, _, rest = key.allowed.partition("; ")
        nullable = " | null" if key.type.endswith("or null") else ""
        return choices + nullable + (f"; {rest}" if rest else "")
    return f"{key.type}, {key.allowed}" if key.allowed else key.type


def _key_lines(key: KeyDoc, value: Any, indent: str) -> list[str]:
    lines = textwrap.wrap(_plain(key.description), _WIDTH - len(indent) - 2,
                          initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")
    entry = f"{indent}{key.path.rsplit('.', 1)[-1]}: {yaml_value(value)}"
    lines.append(f"{entry.ljust(_COMMENT_COLUMN)}  # {_plain(_type_comment(key))}")
    return lines


def _stage_example(training_mode: str, backbone: str, indent: str) -> list[str]:
    """Commented ``stages:`` list equal to what ``training.mode`` expands to for this backbone."""
    stages = default_stages(TrainingConfig(mode=training_mode), backbone)
    lines = [f"{indent}# For full control, delete mode and write the stages here; mode: {training_mode} amounts to:",
             f"{indent}# stages:"]
    for stage in stages:
        data = stage.model_dump(mode="json", include={"name", "epochs", "learning_rate", "trainable"})
        lines.append(f"{indent}#   - {yaml_value(data)}")
    lines.append(f"{indent}# Each stage also takes optimizer, momentum, weight_decay and schedule (docs/config.md).")
    return lines


def render_starter_config(backbone: Optional[str] = None, source: str = "folders") -> str:
    """The text of a commented starter config (every key, its default, its meaning).

    Args:
        backbone: Registered backbone name; ``None`` takes the schema's default backbone.
        source: One of :data:`SOURCES`.

    Returns:
        YAML text that :func:`ecoclassify.config.load_config` accepts.

    Raises:
        ConfigError: ``backbone`` or ``source`` is unknown.
    """
    values = starter_values(backbone, source)
    backbone = values["model.backbone"]
    todo = ", ".join(path for path in _PLACEHOLDERS[source])
    lines = [
        f"# ecoclassify experiment config: {backbone} on a `{source}` data source (written by ecoclassify init).",
        "# Every key is listed with its default; delete the ones you do not change.",
        "# Reference: docs/config.md. Relative paths resolve against this file's folder.",
        f"# Before training, set {todo}, then check with: ecoclassify validate CONFIG" if todo else
        "# Check with: ecoclassify validate CONFIG",
    ]
    schema = describe_schema()
    # Sections that are off (null) unless written, e.g. data.crops: `crops: null`, then its keys commented out.
    optional = {key.path for section in schema for key in section.keys if key.type == "mapping or null"}
    for section in schema:
        # The root holds only keys ecoclassify writes itself; list items are shown as a
        # commented example under their list key.
        if not section.path or section.path.endswith(LIST_ITEM):
            continue
        start = len(lines)
        depth = section.path.count(".") + 1
        indent = "  " * depth
        name = section.path.rsplit(".", 1)[-1]
        doc = _plain(section.doc.split("\n\n", 1)[0].replace("\n", " "))
        parent_indent = "  " * (depth - 1)
        if depth == 1:
            lines.append("")
        lines += textwrap.wrap(doc, _WIDTH - len(parent_indent) - 2, initial_indent=f"{parent_indent}# ",
                               subsequent_indent=f"{parent_indent}# ")
        lines.append(f"{parent_indent}{name}:")
        for key in section.keys:
            if key.path in WRITTEN_BY_ECOCLASSIFY:
                continue
            lines += _key_lines(key, values.get(key.path, key.default), indent)
            if key.path == "training.stages":
                lines += _stage_example(values["training.mode"], backbone, indent)
        if section.path in optional:
            lines[start:] = [_commented(line) for line in lines[start:]]
    return "\n".join(lines) + "\n"


def _commented(line: str) -> str:
    stripped = line.lstrip(" ")
    indent = line[: len(line) - len(stripped)]
    return line if stripped.startswith("#") else f"{indent}# {stripped}"


def init_config(path: Path | str, backbone: Optional[str] = None, source: str = "folders",
                force: bool = False) -> Path:
    """Write a commented starter config to ``path``.

    Args:
        path: The YAML file to create.
        backbone: Registered backbone name; ``None`` takes the schema's default backbone.
        source: One of :data:`SOURCES`.
        force: Replace an existing file.

    Returns:
        ``path``.

    Raises:
        ConfigError: ``backbone`` or ``source`` is unknown.
        RunError: ``path`` exists and ``force`` is not set, or it is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"CONFIG must be a file path, not a folder. Received: '{path}'")
    if path.exists() and not force:
        raise RunError(f"{path} already exists; choose another name, or replace it with --force (force=True)")
    text = render_starter_config(backbone, source)
    # Validation is pure (no file is read), so a placeholder path validates: a starter that
    # does not load would be a bug here, never the user's.
    Config.from_dict(load_yaml_text(text, str(path)), base_dir=path.resolve().parent)
    write_text(path, text)
    return path
