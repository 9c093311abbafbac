"""Config sections ``experiment`` and ``data``: naming, sources, checks and splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ecoclassify.config.base import Section, _resolve

class ExperimentConfig(Section):
    """``experiment``: what the run is called, where run folders go, and the global seed."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    output_dir: Path = Path("runs")
    seed: int = Field(42, ge=0)

    _resolve_output = field_validator("output_dir")(_resolve)

    @field_validator("seed")
    @classmethod
    def _numpy_seed_range(cls, value: int) -> int:
        if value >= 2**32:  # NumPy (and so Keras) refuses larger seeds, but only when training starts
            raise ValueError(f"must be less than 2**32 = {2**32} (the seeds NumPy accepts). Received: {value}")
        return value


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


class CropsConfig(Section):
    """``data.crops``: train on the boxes a detector (MegaDetector...) found instead of whole frames.

    Defaults follow the field's practice: every animal box above MegaDetector's usual 0.2
    threshold (animl, MEWC), widened by 10 % and squared so the animal keeps its shape (DeepFaune
    squares its crops too); boxes under 32 px are too small to classify.
    """

    detections: Path
    format: Literal["auto", "md", "coco", "camtrapdp"] = "auto"
    min_confidence: float = Field(0.2, ge=0.0, le=1.0)
    categories: Optional[list[str]] = Field(default_factory=lambda: ["animal"])
    boxes: Literal["all", "best"] = "all"
    margin: float = Field(0.1, ge=0.0, le=1.0)
    square: bool = True
    min_size_px: int = Field(32, ge=1)
    empty_label: Optional[str] = Field(None, min_length=1)

    _resolve_detections = field_validator("detections")(_resolve)

    @field_validator("categories")
    @classmethod
    def _some_categories(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:
            raise ValueError("must name at least one category (e.g. [animal]) or be null for every category. "
                             "Received: []")
        return value


class DataConfig(Section):
    """``data``: where images and labels come from and how they are checked and split."""

    source: Literal["folders", "csv", "coco", "demo", "camtrapdp"] = "folders"
    root: Optional[Path] = None
    labels: Optional[Path] = None
    image_size: tuple[int, int] = (224, 224)
    on_corrupt: Literal["exclude", "error"] = "exclude"
    multi_label: Literal["error", "drop"] = "error"
    min_images_per_class: int = Field(5, ge=1)
    include_labels: Optional[list[str]] = None
    exclude_labels: list[str] = Field(default_factory=list)
    max_image_pixels: int = Field(120_000_000, ge=1)
    allow_outside_root: bool = False
    split: SplitConfig = Field(default_factory=SplitConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    crops: Optional[CropsConfig] = None

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
        if self.source in ("csv", "coco", "camtrapdp") and self.labels is None:
            kind = {"csv": "a CSV file (filepath,label,...)", "coco": "a COCO Camera Traps JSON file",
                    "camtrapdp": "a Camtrap DP datapackage.json or its folder"}[self.source]
            raise ValueError(f"@labels is required for source {self.source!r}: {kind}")
        overlap = set(self.include_labels or ()) & set(self.exclude_labels)
        if overlap:
            raise ValueError(f"@exclude_labels cannot repeat labels of include_labels. Received: {sorted(overlap)}")
        return self
