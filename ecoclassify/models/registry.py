"""Backbone registry: a decorator plus a name -> spec mapping.

Importing this module (and the modules that register backbones) never imports
TensorFlow: builders import Keras when called. That keeps config validation and
``ecoclassify --help`` fast, and lets the config check backbone names before any
TensorFlow work starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from ecoclassify.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import pandas

#: How raw 0..255 RGB floats become the backbone's input. ``none`` means the
#: backbone network already contains its own preprocessing (EfficientNet, ConvNeXt).
Preprocessing = Literal["caffe", "tf", "torch", "lite", "unit", "none"]


@dataclass(frozen=True)
class BackboneSpec:
    """What downstream code needs to know about a backbone, so nothing else hard-codes it.

    Attributes:
        name: Registry name used in configs (``model.backbone``).
        builder: ``builder(input_shape, weights, options) -> keras.Model`` returning the
            feature extractor without its classification top and without pooling.
            ``weights`` is ``"imagenet"``, ``None`` or a path to a weights file;
            ``options`` is the backbone's own config section (only ``custom_cnn`` uses it).
        default_size: Input side length the backbone was designed and pretrained for.
        min_size: Smallest input side length the architecture accepts.
        preprocessing: The ``Preprocessing`` mode applied inside the model before the backbone.
        boundaries: Named layer boundaries useful for fine-tuning, e.g. ``{"last_block": "block5_conv1"}``.
        fine_tune_from: Boundary unfrozen by ``training.mode: finetune``.
        weight_formats: File suffixes accepted as ``model.weights`` paths.
        imagenet: Whether ``model.weights: imagenet`` works (Keras downloads the weights).
        pretrained_file: Name of a pretrained weights file that must be passed as a path
            because Keras cannot download it (EfficientNet-Lite0's ImageNet state).
        description: One line shown by ``ecoclassify backbones``.
    """

    name: str
    builder: Callable[..., "keras.Model"]
    default_size: int
    min_size: int
    preprocessing: Preprocessing
    boundaries: dict[str, str] = field(default_factory=dict)
    fine_tune_from: str | None = None
    weight_formats: tuple[str, ...] = (".weights.h5", ".h5")
    imagenet: bool = True
    pretrained_file: str | None = None
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    *,
    default_size: int,
    min_size: int,
    preprocessing: Preprocessing,
    boundaries: dict[str, str] | None = None,
    fine_tune_from: str | None = None,
    weight_formats: tuple[str, ...] = (".weights.h5", ".h5"),
    imagenet: bool = True,
    pretrained_file: str | None = None,
    description: str = "",
) -> Callable[[Callable[..., "keras.Model"]], Callable[..., "keras.Model"]]:
    """Register a backbone builder under ``name`` (used as a decorator)."""

    def decorator(builder: Callable[..., "keras.Model"]) -> Callable[..., "keras.Model"]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneSpec(
            name=name,
            builder=builder,
            default_size=default_size,
            min_size=min_size,
            preprocessing=preprocessing,
            boundaries=dict(boundaries or {}),
            fine_tune_from=fine_tune_from,
            weight_formats=weight_formats,
            imagenet=imagenet,
            pretrained_file=pretrained_file,
            description=description,
        )
        return builder

    return decorator


def _ensure_loaded() -> None:
    # The built-in backbones register themselves on import; no TensorFlow is imported.
    from ecoclassify.models import backbones  # noqa: F401


def list_backbones() -> list[str]:
    """Return the registered backbone names, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_backbone(name: str, key: str = "model.backbone") -> BackboneSpec:
    """Return the spec registered under ``name``.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the valid names and the
            closest matches.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(unknown_choice_message(key, list_backbones(), name)) from None


def backbone_table(with_params: bool = True) -> "pandas.DataFrame":
    """One row per backbone: name, default and minimum input size, preprocessing, fine-tuning
    boundary, pretrained weights and (building each with random weights) parameter count."""
    import pandas

    rows = []
    for name in list_backbones():
        spec = _REGISTRY[name]
        row = {
            "backbone": name,
            "default_size": spec.default_size,
            "min_size": spec.min_size,
            "preprocessing": spec.preprocessing,
            "fine_tune_from": spec.fine_tune_from or "-",
            "imagenet": "yes" if spec.imagenet else ("file" if spec.pretrained_file else "no"),
        }
        if with_params:
            size = max(spec.min_size, 64)
            row["parameters"] = f"{spec.builder((size, size, 3), None, None).count_params():,}"
        rows.append(row)
    return pandas.DataFrame(rows)


def unknown_choice_message(key: str, allowed: list[str], received: object) -> str:
    """Format the standard 'must be one of ... Received: ...' message with close matches."""
    message = f"{key} must be one of: {', '.join(allowed)}. Received: {received!r}"
    close = difflib.get_close_matches(str(received), allowed, n=3)
    if close:
        message += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    return message
