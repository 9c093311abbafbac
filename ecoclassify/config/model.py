"""Config sections ``model`` and ``augmentation``: backbone, weights, head, random changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ecoclassify.config.base import Section, _resolve
from ecoclassify.config.backbones import get_backbone, list_backbones
from ecoclassify.config.errors import unknown_choice_message

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
        if self.weights == "imagenet" and spec.pretrained_file:
            raise ValueError(
                f"@weights 'imagenet' cannot be downloaded for backbone {self.backbone!r}: set model.weights to the "
                f"path of its ImageNet weights file, {spec.pretrained_file}, or 'none'"
            )
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
