"""The whole experiment config, ``--set`` overrides and loading a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, model_validator

from ecoclassify.config.base import Section
from ecoclassify.config.data import DataConfig, ExperimentConfig
from ecoclassify.config.model import AugmentationConfig, ModelConfig
from ecoclassify.config.training import FromLayer, ReportConfig, StageConfig, TrainingConfig
from ecoclassify.config.errors import raise_config_error
from ecoclassify.errors import ConfigError
from ecoclassify.config.backbones import get_backbone
from ecoclassify.config.yamlio import dump_yaml, load_yaml_file, load_yaml_text


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
