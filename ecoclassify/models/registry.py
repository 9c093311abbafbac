"""Backbone builders by name: a decorator plus a name -> builder mapping.

The facts about each backbone (sizes, preprocessing, boundaries) are plain data in
:mod:`ecoclassify.config.backbones`, so configs are checked without the model code; the
builders that make the networks register here. This module imports nothing of ``models/``:
the built-in builders register when :mod:`ecoclassify.models` is imported, and importing them
never imports TensorFlow (builders import Keras when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ecoclassify.config.backbones import BACKBONES, get_backbone, list_backbones
from ecoclassify.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import pandas

#: ``builder(input_shape, weights, options) -> keras.Model``: the feature extractor without its
#: classification top and without pooling. ``weights`` is ``"imagenet"``, ``None`` or a path to
#: a weights file; ``options`` is the backbone's own config section (only ``custom_cnn`` uses it).
Builder = Callable[..., "keras.Model"]

_BUILDERS: dict[str, Builder] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Register the builder of backbone ``name`` (used as a decorator).

    Raises:
        ValueError: ``name`` has no spec in :data:`ecoclassify.config.backbones.BACKBONES`, or
            a builder is already registered under it.
    """

    def decorator(builder: Builder) -> Builder:
        if name not in BACKBONES:
            raise ValueError(f"backbone {name!r} has no spec in ecoclassify.config.backbones.BACKBONES")
        if name in _BUILDERS:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def registered_builders() -> list[str]:
    """Names of the backbones whose builder is registered, sorted."""
    return sorted(_BUILDERS)


def build_backbone(name: str, input_shape: tuple[int, int, int], weights: Any, options: Any = None) -> "keras.Model":
    """Build backbone ``name`` (see :data:`Builder` for the arguments).

    Raises:
        ConfigError: ``name`` is not a known backbone.
        ModelError: The backbone cannot be built (bad shape, weights file, failed download).
    """
    get_backbone(name)  # unknown names: the config's message, with close matches
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ModelError(f"backbone {name!r} has no registered builder") from None
    return builder(input_shape, weights, options)


def backbone_table(with_params: bool = True) -> "pandas.DataFrame":
    """One row per backbone: name, default and minimum input size, preprocessing, fine-tuning
    boundary, pretrained weights and (building each with random weights) parameter count."""
    import pandas

    rows = []
    for name in list_backbones():
        spec = BACKBONES[name]
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
            row["parameters"] = f"{build_backbone(name, (size, size, 3), None).count_params():,}"
        rows.append(row)
    return pandas.DataFrame(rows)
