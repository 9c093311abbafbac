"""Experiment configuration: YAML -> validated, documented pydantic objects.

Precedence is defaults < YAML file < ``--set key.path=value`` overrides. Validation is
pure: no folder is created and no file is read here (the data layer does that), so a
config can be checked anywhere, instantly, before TensorFlow is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ecoclassify.configerrors import raise_config_error
from ecoclassify.errors import ConfigError
from ecoclassify.models.registry import get_backbone, list_backbones, unknown_choice_message
from ecoclassify.yamlio import dump_yaml, load_yaml_file, load_yaml_text

#: Metrics the trainer logs each epoch; ``training.monitor`` must name one of them.
LOGGED_METRICS = ("val_macro_f1", "val_accuracy", "val_loss", "macro_f1", "accuracy", "loss")


def _resolve(value: Optional[Path], info: ValidationInfo) -> Optional[Path]:
    """Make a relative path absolute against the config file's folder (no filesystem access)."""
    if value is None:
        return None
    value = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value))


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _explicit_subsections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            # YAML reads `yes` and `true` as booleans, and pydantic would take them as 1.
            if field.annotation in (int, float) and isinstance(data.get(name), bool):
                raise ValueError(f"@{name} must be a number. Received: {data[name]!r}")
            # Omitted sections are validated from {} (not built by default_factory), so they
            # get the validation context too: a default relative path resolves like a written one.
            if (name not in data and not field.is_required() and isinstance(field.annotation, type)
                    and issubclass(field.annotation, Section)):
                data[name] = {}
        return data


class ExperimentConfig(Section):
    """``experiment``: what the run is called, where run folders go, and the global seed."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    output_dir: Path = Path("runs")
    seed: int = Field(42, ge=0)

    _resolve_output = field_validator("output_dir")(_resolve)


class SplitConfig(Section):
    """``data.split``: how images are divided into train / val / test."""

    method: Literal["stratified", "group", "predefined"] = "stratified"
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    group_by: Optional[str] = None

    @model_validator(mode="after")
    def _leaves_a_training_set(self) -> "SplitConfig":
        if self.method != "predefined" and self.val + self.test >= 0.95:
            raise ValueError(
                "val + test must leave a training set (val + test < 0.95). "
                f"Received: val={self.val}, test={self.test}"
            )
        if self.method == "group" and not self.group_by:
            raise ValueError(
                "@group_by is required for method 'group': the column whose values must not straddle "
                "splits (e.g. group_by: site). Received: None"
            )
        return self


class DemoConfig(Section):
    """``data.demo``: size of the built-in synthetic data set (``source: demo``)."""

    images_per_class: int = Field(60, ge=6, le=5000)
    image_size: int = Field(64, ge=16, le=512)


class DataConfig(Section):
    """``data``: where images and labels come from and how they are checked and split."""

    source: Literal["folders", "csv", "coco", "demo"] = "folders"
    root: Optional[Path] = None
    labels: Optional[Path] = None
    image_size: tuple[int, int] = (224, 224)
    on_corrupt: Literal["exclude", "error"] = "exclude"
    min_images_per_class: int = Field(5, ge=1)
    include_labels: Optional[list[str]] = None
    exclude_labels: list[str] = Field(default_factory=list)
    max_image_pixels: int = Field(120_000_000, ge=1)
    split: SplitConfig = Field(default_factory=SplitConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    _resolve_paths = field_validator("root", "labels")(_resolve)

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be [height, width] or one integer. Received: {value!r}")
        if isinstance(value, int):
            return (value, value)
        return value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8 or max(value) > 2048:
            raise ValueError(f"must be between 8 and 2048 pixels per side. Received: {list(value)}")
        return value

    @model_validator(mode="after")
    def _source_needs(self) -> "DataConfig":
        if self.source == "folders" and self.root is None:
            raise ValueError("@root is required for source 'folders': the folder with one subfolder per class")
        if self.source in ("csv", "coco") and self.labels is None:
            kind = "a CSV file (filepath,label,...)" if self.source == "csv" else "a COCO Camera Traps JSON file"
            raise ValueError(f"@labels is required for source {self.source!r}: {kind}")
        overlap = set(self.include_labels or ()) & set(self.exclude_labels)
        if overlap:
            raise ValueError(f"@exclude_labels cannot repeat labels of include_labels. Received: {sorted(overlap)}")
        return self


class HeadConfig(Section):
    """``model.head``: the classifier put on top of the pooled backbone features."""

    pooling: Literal["avg", "max"] = "avg"
    dense: list[int] = Field(default_factory=lambda: [256])
    dropout: float = Field(0.5, ge=0.0, lt=1.0)

    @field_validator("dense")
    @classmethod
    def _positive_units(cls, value: list[int]) -> list[int]:
        if any(units < 1 for units in value):
            raise ValueError(f"must hold positive layer widths. Received: {value}")
        return value


class CustomCNNConfig(Section):
    """``model.custom_cnn``: the small VGG-style network built by hand (``backbone: custom_cnn``)."""

    filters: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1, max_length=8)
    convs_per_block: int = Field(2, ge=1, le=4)
    kernel_size: int = Field(3, ge=1, le=11)
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("filters")
    @classmethod
    def _positive_filters(cls, value: list[int]) -> list[int]:
        if any(f < 1 for f in value):
            raise ValueError(f"must hold positive filter counts. Received: {value}")
        return value


class ModelConfig(Section):
    """``model``: backbone, where its starting weights come from, and the head."""

    backbone: str = "vgg16"
    weights: Union[Literal["imagenet", "none"], Path] = "imagenet"
    head: HeadConfig = Field(default_factory=HeadConfig)
    custom_cnn: CustomCNNConfig = Field(default_factory=CustomCNNConfig)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in list_backbones():
            raise ValueError(unknown_choice_message("", list_backbones(), value).lstrip())
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_choice(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value is False:
            return "none"
        if isinstance(value, str) and value.lower() in ("imagenet", "none"):
            return value.lower()
        if isinstance(value, (str, Path)) and str(value).strip():
            return _resolve(Path(value), info)
        raise ValueError(f"must be 'imagenet', 'none' or a path to a weights file. Received: {value!r}")

    @model_validator(mode="after")
    def _weights_fit_backbone(self) -> "ModelConfig":
        spec = get_backbone(self.backbone)
        if self.weights == "imagenet" and not spec.imagenet:
            raise ValueError(
                f"@weights 'imagenet' is not available for backbone {self.backbone!r}: "
                f"use 'none' or a path to a weights file ({', '.join(spec.weight_formats)})"
            )
        if isinstance(self.weights, Path) and not str(self.weights.name).endswith(spec.weight_formats):
            raise ValueError(
                f"@weights for {self.backbone!r} must be a file ending in one of: "
                f"{', '.join(spec.weight_formats)}. Received: '{self.weights}'"
            )
        return self

    @property
    def weights_arg(self) -> Union[str, Path, None]:
        """``weights`` in the form backbone builders take: ``"imagenet"``, a path, or ``None``."""
        return None if self.weights == "none" else self.weights


class AugmentationConfig(Section):
    """``augmentation``: random changes applied inside the model, in training only.

    Factors follow Keras' preprocessing layers: ``rotation`` is a fraction of a full turn,
    ``zoom``/``translation``/``crop`` fractions of the image side, ``contrast``/``brightness``
    fractions of the value range.
    """

    enabled: bool = True
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    rotation: float = Field(0.05, ge=0.0, le=0.5)
    zoom: float = Field(0.1, ge=0.0, lt=1.0)
    translation: float = Field(0.0, ge=0.0, le=0.5)
    contrast: float = Field(0.1, ge=0.0, le=1.0)
    brightness: float = Field(0.1, ge=0.0, le=1.0)
    crop: float = Field(0.0, ge=0.0, le=0.5)

    @property
    def active(self) -> bool:
        """Whether any augmentation runs at all."""
        factors = (self.rotation, self.zoom, self.translation, self.contrast, self.brightness, self.crop)
        return self.enabled and (self.flip != "none" or any(f > 0 for f in factors))


class LastN(Section):
    """``trainable: {last_n: N}``: the last N layers of the backbone train."""

    last_n: int = Field(ge=1)


class FromLayer(Section):
    """``trainable: {from_layer: NAME}``: the backbone trains from layer NAME onwards."""

    from_layer: str = Field(min_length=1)


Trainable = Union[Literal["none", "all"], LastN, FromLayer]
_TRAINABLE_CHOICES = "none, all, {last_n: N}, {from_layer: LAYER_NAME}"


class StageConfig(Section):
    """One entry of ``training.stages``: a compile + fit with its own freezing and optimiser."""

    name: Optional[str] = None
    epochs: int = Field(ge=1, le=10_000)
    learning_rate: float = Field(gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: Optional[float] = Field(None, ge=0.0)
    schedule: Literal["constant", "cosine", "reduce_on_plateau"] = "constant"
    trainable: Trainable = "none"

    @field_validator("trainable", mode="before")
    @classmethod
    def _trainable_choice(cls, value: Any) -> Any:
        if isinstance(value, str) and value in ("none", "all"):
            return value
        if value is None or value is False:
            return "none"
        if value is True:
            return "all"
        if isinstance(value, dict) and len(value) == 1 and "last_n" in value:
            return LastN(**value)
        if isinstance(value, dict) and len(value) == 1 and "from_layer" in value:
            return FromLayer(**value)
        if isinstance(value, (LastN, FromLayer)):
            return value
        raise ValueError(f"must be one of: {_TRAINABLE_CHOICES}. Received: {value!r}")


class EarlyStoppingConfig(Section):
    """``training.early_stopping``: stop a stage when ``training.monitor`` stops improving."""

    enabled: bool = True
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class TrainingConfig(Section):
    """``training``: batch size, stages (or a ``mode`` shortcut), class weights, stopping."""

    batch_size: int = Field(32, ge=1, le=4096)
    mode: Optional[Literal["transfer", "finetune", "scratch"]] = None
    epochs: int = Field(10, ge=1, le=10_000)
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    finetune_epochs: int = Field(10, ge=1, le=10_000)
    finetune_learning_rate: float = Field(1e-5, gt=0.0, le=10.0)
    stages: Optional[list[StageConfig]] = Field(None, min_length=1)
    class_weight: Union[Literal["none", "balanced"], dict[str, float]] = "balanced"
    monitor: str = "val_macro_f1"
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    train_batchnorm: bool = False
    deterministic: bool = False
    cache_features: Union[Literal["auto"], bool] = "auto"

    @field_validator("cache_features", mode="before")
    @classmethod
    def _cache_choice(cls, value: Any) -> Any:
        if value in ("auto", True, False):
            return value
        raise ValueError(f"must be one of: auto, true, false. Received: {value!r}")

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight_choice(cls, value: Any) -> Any:
        if value is None:
            return "none"
        if isinstance(value, str) and value in ("none", "balanced"):
            return value
        if isinstance(value, dict) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in value.values()):
            return {str(k): float(w) for k, w in value.items()}
        raise ValueError(
            "must be one of: none, balanced, or a mapping {class: positive weight}. " f"Received: {value!r}"
        )

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in LOGGED_METRICS:
            raise ValueError(unknown_choice_message("", list(LOGGED_METRICS), value).lstrip())
        return value

    @model_validator(mode="after")
    def _mode_or_stages(self) -> "TrainingConfig":
        if self.mode is not None and self.stages is not None:
            raise ValueError(
                "@mode and stages are alternatives: set mode (transfer, finetune, scratch) or list stages, "
                "not both. "
                f"Received: mode={self.mode!r} and {len(self.stages)} stage(s)"
            )
        return self


class ReportConfig(Section):
    """``report``: options of the evaluation report."""

    target_precisions: list[float] = Field(default_factory=lambda: [0.95, 0.99], min_length=1)

    @field_validator("target_precisions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < p <= 1.0 for p in value):
            raise ValueError(f"must hold precisions in (0, 1]. Received: {value}")
        return sorted(set(value))


class Config(Section):
    """A whole experiment. Build it with :func:`load_config` or :meth:`Config.from_dict`."""

    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    #: Versions and time written into a run folder's config.yaml; ignored when comparing configs.
    provenance: Optional[dict[str, str]] = None

    @model_validator(mode="after")
    def _cross_section_rules(self) -> "Config":
        spec = get_backbone(self.model.backbone)
        if min(self.data.image_size) < spec.min_size:
            raise ValueError(
                f"@data.image_size must be at least {spec.min_size} px per side for backbone "
                f"{spec.name!r}. Received: {list(self.data.image_size)}"
            )
        if self.training.stages is None:
            self.training.stages = default_stages(self.training, self.model.backbone)
            self.training.mode = None
        if self.training.cache_features is True and self.augmentation.active:
            raise ValueError(
                "@training.cache_features true needs augmentation.enabled: false: augmentation runs before the "
                "backbone, so its features differ every epoch and cannot be cached (use auto to cache only "
                "when possible)")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Optional[Path] = None) -> "Config":
        """Validate a plain mapping; relative paths resolve against ``base_dir``.

        Raises:
            ConfigError: One paragraph listing every problem with its key path.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections. Received: {type(data).__name__}")
        try:
            return cls.model_validate(data, context={"base_dir": base_dir})
        except ConfigError:
            raise
        except Exception as exc:  # pydantic.ValidationError, formatted with key paths
            raise_config_error(exc, cls)
            raise  # pragma: no cover - raise_config_error always raises

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (paths as strings), in schema order."""
        return self.model_dump(mode="json", exclude_none=False)

    def to_yaml(self) -> str:
        """The resolved config as YAML, loadable again with :func:`load_config`."""
        return dump_yaml(self.to_dict())

    def comparable(self) -> dict[str, Any]:
        """The config without provenance, for checking that a resumed run is unchanged."""
        data = self.to_dict()
        data.pop("provenance", None)
        return data


def default_stages(training: TrainingConfig, backbone: str) -> list[StageConfig]:
    """Expand ``training.mode`` (default ``transfer``) into explicit stages.

    ``transfer`` trains the head on a frozen backbone; ``finetune`` adds a second stage that
    unfreezes from the backbone's registered boundary at ``finetune_learning_rate`` (the
    keras-io recipe); ``scratch`` trains everything from the first epoch.
    """
    mode = training.mode or "transfer"
    head = StageConfig(
        name="head" if mode != "scratch" else "scratch",
        epochs=training.epochs,
        learning_rate=training.learning_rate,
        trainable="all" if mode == "scratch" else "none",
    )
    if mode != "finetune":
        return [head]
    spec = get_backbone(backbone)
    if spec.fine_tune_from is None:
        raise ValueError(
            f"training.mode 'finetune' needs a fine-tuning boundary, and backbone {backbone!r} has none: "
            "write training.stages with trainable: {from_layer: NAME} or {last_n: N}"
        )
    return [
        head,
        StageConfig(
            name="finetune",
            epochs=training.finetune_epochs,
            learning_rate=training.finetune_learning_rate,
            trainable=FromLayer(from_layer=spec.fine_tune_from),
        ),
    ]


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config mapping, in place.

    List items are addressed by index: ``training.stages.0.epochs=2``.

    Raises:
        ConfigError: An override is not of the form ``key.path=value`` or walks through a scalar.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key.path=value (e.g. training.batch_size=16). Received: {item!r}")
        value = load_yaml_text(raw, f"--set {key}")
        node: Any = data
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {key}: {where} is not an index of a list of {len(node)} item(s)")
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        if parts[depth + 1].isdigit():
                            raise ConfigError(
                                f"--set {key}: {where} is not a list in this config (stages come from "
                                "training.mode when not written out); write the list in the YAML file first"
                            )
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is a value, not a section")
    return data


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a YAML experiment config.

    Args:
        path: The YAML file. Relative paths inside it resolve against its folder.
        overrides: ``key.path=value`` strings applied after the file (``--set`` on the CLI).

    Returns:
        The validated config, with ``training.stages`` expanded from ``training.mode``.

    Raises:
        ConfigError: The file is unreadable, not YAML, repeats a key, or fails validation.
    """
    path = Path(path)
    data = load_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping of sections. Received: {type(data).__name__}")
    apply_overrides(data, overrides)
    return Config.from_dict(data, base_dir=path.resolve().parent)
