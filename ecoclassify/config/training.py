"""Config sections ``training`` (stages, freezing, stopping) and ``report``."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ecoclassify.config.base import Section, boolean_word
from ecoclassify.config.errors import unknown_choice_message

#: Metrics the trainer logs each epoch; ``training.monitor`` must name one of them.
LOGGED_METRICS = ("val_macro_f1", "val_accuracy", "val_loss", "macro_f1", "accuracy", "loss")


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
        value = boolean_word(value)  # `trainable: no` meant "none" when YAML 1.1 read it as false
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
    mixed_precision: bool = False
    jit_compile: Union[Literal["auto"], bool] = "auto"
    distribution: Literal["none", "mirrored", "multi_worker"] = "none"
    devices: Optional[list[str]] = Field(None, min_length=1)

    @field_validator("cache_features", "jit_compile", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        value = boolean_word(value)
        if value == "auto" or isinstance(value, bool):
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
        if self.devices is not None and self.distribution != "mirrored":
            raise ValueError(
                "@devices applies to distribution 'mirrored' only (multi_worker reads TF_CONFIG). "
                f"Received: distribution={self.distribution!r}, devices={self.devices}"
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
