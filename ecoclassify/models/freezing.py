"""Freezing policy: which backbone layers train in a stage (``training.stages[].trainable``).

The head always trains. ``none`` freezes the whole backbone (feature extraction), ``all``
unfreezes it, ``{last_n: N}`` unfreezes its last N layers (``backbone.layers[-N:]``, the
Keras convention) and ``{from_layer: NAME}`` unfreezes NAME and every layer after it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import keras

from ecoclassify.config import FromLayer, LastN, Trainable
from ecoclassify.errors import ConfigError
from ecoclassify.models.build import BACKBONE


@dataclass(frozen=True)
class FreezeSummary:
    """What a stage trains: parameter counts and the backbone layers with trainable weights."""

    trainable_params: int
    frozen_params: int
    trainable_backbone_layers: tuple[str, ...]

    def describe(self) -> str:
        """One line for the training log."""
        total = self.trainable_params + self.frozen_params
        layers = len(self.trainable_backbone_layers)
        return (f"{self.trainable_params:,} of {total:,} parameters train "
                f"({layers} backbone layer(s) with weights unfrozen)")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model of a model built by :func:`ecoclassify.models.build.build_model`."""
    return model.get_layer(BACKBONE)


def resolve_start(backbone: keras.Model, trainable: Trainable, key: str = "trainable") -> int | None:
    """Index of the first trainable backbone layer; ``None`` when the backbone is frozen.

    Raises:
        ConfigError: ``from_layer`` names no layer of the backbone (the closest names are listed)
            or ``last_n`` exceeds the number of layers.
    """
    layers = backbone.layers
    if trainable == "none":
        return None
    if trainable == "all":
        return 0
    if isinstance(trainable, LastN):
        if trainable.last_n > len(layers):
            raise ConfigError(f"{key}.last_n must be at most {len(layers)}, the number of layers of backbone "
                              f"{backbone.name!r}. Received: {trainable.last_n}")
        return len(layers) - trainable.last_n
    assert isinstance(trainable, FromLayer)
    names = [layer.name for layer in layers]
    if trainable.from_layer not in names:
        close = difflib.get_close_matches(trainable.from_layer, names, n=5, cutoff=0.4)
        hint = f" Closest layer names: {', '.join(close)}." if close else ""
        raise ConfigError(f"{key}.from_layer names no layer of the backbone.{hint} "
                          f"Received: {trainable.from_layer!r}")
    return names.index(trainable.from_layer)


def apply_trainable(model: keras.Model, trainable: Trainable, key: str = "trainable") -> FreezeSummary:
    """Set the trainable flags of ``model``'s backbone for a stage; the head always trains.

    Recompile the model afterwards: Keras reads the flags at compile time.

    Returns:
        The resulting parameter counts and unfrozen backbone layers.
    """
    backbone = backbone_of(model)
    start = resolve_start(backbone, trainable, key)
    backbone.trainable = start is not None
    if start is not None:
        for index, layer in enumerate(backbone.layers):
            layer.trainable = index >= start
    for layer in model.layers:
        if layer is not backbone:
            layer.trainable = True
    return summarize(model)


def summarize(model: keras.Model) -> FreezeSummary:
    """Count trainable and frozen parameters and list unfrozen backbone layers."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    frozen = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    backbone = backbone_of(model)
    unfrozen = tuple(layer.name for layer in backbone.layers if layer.trainable_weights)
    return FreezeSummary(trainable, frozen, unfrozen if backbone.trainable else ())
