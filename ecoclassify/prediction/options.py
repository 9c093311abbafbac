"""The options of ``ecoclassify predict`` as one typed, validated object.

:class:`PredictOptions` is what the command line builds from its flags, what the Python API
takes (``predict(model, inputs, PredictOptions(...))`` or the same names as keyword
arguments) and what the local and Dask engines read, so every path checks the same rules and
gives the same messages. Validation is pure: whether the output exists is checked by
:func:`ecoclassify.prediction.labelling.predict` before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ecoclassify.data.images import DEFAULT_MAX_PIXELS
from ecoclassify.errors import ConfigError
from ecoclassify.prediction.md_categories import check_md_category_overrides

#: Output formats: one row per file (csv), the same with metadata (json), MegaDetector's batch
#: output format (md-json, for Timelapse and AddaxAI).
FORMATS = ("csv", "json", "md-json")
#: Where the labelling runs: threads in this process, or chunks on Dask workers.
ENGINES = ("local", "dask")
#: What runs the model: Keras, or the same model converted for the LiteRT interpreter.
RUNTIMES = ("keras", "litert")


class PredictOptions(BaseModel):
    """How to label a set of images (see :func:`ecoclassify.prediction.labelling.predict`).

    Attributes:
        output: File to write; None writes nothing (and keeps no checkpoint).
        batch_size: Images per model call.
        top_k: Number of ``topN_label``/``topN_score`` column pairs (at most the class count).
        threshold: A top-1 probability below it gives the label ``unknown``.
        recursive: Search folders below their top level.
        fmt: ``csv``, ``json`` or ``md-json`` (MegaDetector batch output format).
        checkpoint_every: Save a checkpoint part after this many more images.
        resume: Continue from the checkpoint of an interrupted run with the same model and inputs.
        overwrite: Replace an existing output (and discard a checkpoint).
        sequence_gap: Seconds; group images into sequences.
        md_categories: For ``md-json``: ``{class: "animal" | "person" | "vehicle" | "empty"}``
            for classes whose name does not say it (see :mod:`ecoclassify.prediction.md_categories`).
        allow_truncated: Classify the readable part of truncated files instead of failing them.
        max_pixels: Images whose header claims more pixels fail as ``too_large``.
        threads: Decoding threads (per Dask worker with the Dask engine); None: the number of CPUs.
        engine: ``local`` or ``dask``.
        scheduler: With ``engine="dask"``, the address of a running Dask scheduler; None starts
            a ``LocalCluster``.
        dask_workers: Worker processes of that ``LocalCluster``.
        detections: A detector's output (MegaDetector JSON, COCO Camera Traps, Camtrap DP):
            classify the crops of its boxes instead of whole frames (see
            :mod:`ecoclassify.prediction.crops`).
        min_confidence: With ``detections``: boxes below this detector confidence are ignored;
            None: the model's training setting (``labels.json``), else 0.2.
        detection_categories: With ``detections``: the box categories classified (``animal``);
            boxes of other categories above the threshold are reported with the category as label.
        crop_margin: With ``detections``: the margin around each box; None: the model's training setting, else 0.1.
        crop_square: With ``detections``: square crops; None: the model's training setting, else True.


        runtime: ``keras`` (the default), or ``litert``: the model converted once to TensorFlow
            Lite and run by the LiteRT interpreter, checked against Keras on first use (needs
            ``pip install 'ecoclassify[litert]'``; see :mod:`ecoclassify.models.litert`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Optional[Path] = None
    batch_size: int = 32
    top_k: int = 3
    threshold: Optional[float] = None
    recursive: bool = True
    fmt: Literal["csv", "json", "md-json"] = "csv"
    checkpoint_every: int = 1000
    resume: bool = False
    overwrite: bool = False
    sequence_gap: Optional[float] = None
    md_categories: Optional[dict[str, str]] = None
    allow_truncated: bool = False
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    threads: Optional[int] = None
    engine: Literal["local", "dask"] = "local"
    scheduler: Optional[str] = None
    dask_workers: Optional[int] = None
    detections: Optional[Path] = None
    min_confidence: Optional[float] = Field(None, ge=0.0, le=1.0)
    detection_categories: list[str] = Field(default_factory=lambda: ["animal"], min_length=1)
    crop_margin: Optional[float] = Field(None, ge=0.0, le=1.0)
    crop_square: Optional[bool] = None


    runtime: Literal["keras", "litert"] = "keras"

    @field_validator("batch_size", "top_k", "checkpoint_every", "max_pixels", "threads", "dask_workers",
                     mode="before")
    @classmethod
    def _positive_int(cls, value: Any, info: ValidationInfo) -> Any:
        optional = info.field_name in ("max_pixels", "threads", "dask_workers")
        if value is None and optional:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{info.field_name} must be a positive integer. Received: {info.field_name}={value!r}")
        return int(value)

    @field_validator("threshold", mode="before")
    @classmethod
    def _probability(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                  or not 0 <= value <= 1):
            raise ValueError(f"threshold must be a probability between 0 and 1. Received: threshold={value!r}")
        return value

    @field_validator("sequence_gap", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                  or not value > 0):
            raise ValueError(f"sequence_gap must be a positive number of seconds. Received: sequence_gap={value!r}")
        return value

    @field_validator("md_categories", mode="before")
    @classmethod
    def _md_categories(cls, value: Any) -> Any:
        return None if value is None else check_md_category_overrides(value)

    @field_validator("fmt", "engine", "runtime", mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> Any:
        allowed = {"fmt": FORMATS, "engine": ENGINES, "runtime": RUNTIMES}[info.field_name]
        if value not in allowed:
            raise ValueError(f"{info.field_name} must be one of: {', '.join(allowed)}. "
                             f"Received: {info.field_name}={value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "PredictOptions":
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume keeps the checkpoint, overwrite "
                             "discards it. Received: resume=True, overwrite=True")
        if self.resume and self.output is None:
            raise ValueError("resume needs the output file whose checkpoint to continue. Received: output=None")
        if self.detections is not None:
            unsupported = [name for name, on in (("resume", self.resume), ("sequence_gap", self.sequence_gap),
                                                 ("engine='dask'", self.engine == "dask")) if on]
            if unsupported:
                raise ValueError(f"detections (classifying crops) does not support {', '.join(unsupported)} yet. "
                                 f"Received: detections='{self.detections}' with {', '.join(unsupported)}")
        if self.engine != "dask" and (self.scheduler is not None or self.dask_workers is not None):
            raise ValueError(f"scheduler and dask_workers apply to engine 'dask' only. Received: engine={self.engine!r}")
        return self

    @classmethod
    def build(cls, options: "PredictOptions | None" = None, **values: Any) -> "PredictOptions":
        """``options`` itself, or options made from keyword ``values``, as a :class:`ConfigError` if invalid.

        Raises:
            ConfigError: An option is invalid, unknown, or both ``options`` and ``values`` were given.
        """
        if options is not None:
            if values:
                raise ConfigError("give predict options either as a PredictOptions object or as keyword arguments, "
                                  f"not both. Received: options and {', '.join(sorted(values))}")
            if not isinstance(options, cls):
                raise ConfigError(f"options must be a PredictOptions. Received: {type(options).__name__}")
            return options
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_message(exc.errors()[0])) from None


def _message(error: dict[str, Any]) -> str:
    name = ".".join(str(part) for part in error.get("loc", ())) or "options"
    if error.get("type") == "extra_forbidden":
        known = ", ".join(PredictOptions.model_fields)
        return f"{name} is not an option of predict; the options are: {known}. Received: {name}={error.get('input')!r}"
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if error.get("type") != "value_error":  # pydantic's own wording: say which option
        message = f"{name}: {message}. Received: {name}={error.get('input')!r}"
    return message
