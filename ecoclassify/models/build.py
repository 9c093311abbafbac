"""Assemble the end-to-end classifier: raw uint8 image -> augmentation -> preprocessing -> backbone -> head.

Layer names are part of the contract: ``augmentation``, ``preprocess``, ``backbone``,
``pooling``, ``head_dense_{i}``, ``head_dropout``, ``predictions``. Freezing and the
feature cache find the pieces by these names.
"""

from __future__ import annotations

import keras

from ecoclassify.config import Config
from ecoclassify.models.layers import build_augmentation, preprocessing_block
from ecoclassify.config.backbones import get_backbone
from ecoclassify.models.registry import build_backbone

BACKBONE = "backbone"


def uses_pretrained_batchnorm(config: Config) -> bool:
    """Whether the backbone runs BatchNorm in inference mode (keras-io transfer-learning recipe).

    A pretrained backbone keeps its BatchNorm statistics (``training=False``) even when its
    layers are unfrozen, unless ``training.train_batchnorm`` is set; a backbone trained from
    random weights must learn them, so it runs in training mode.
    """
    return config.model.weights != "none" and not config.training.train_batchnorm


def build_model(config: Config, num_classes: int) -> keras.Model:
    """Build the classifier described by ``config`` for ``num_classes`` outputs.

    Args:
        config: The validated config (backbone, weights, head, augmentation, image size).
        num_classes: Number of softmax outputs, in the order of ``labels.json``.

    Returns:
        A ``keras.Model`` taking ``uint8`` images of ``data.image_size`` and returning class
        probabilities (float32 even under mixed precision).

    Raises:
        ModelError: The backbone or its weights cannot be built or loaded.
    """
    height, width = config.data.image_size
    spec = get_backbone(config.model.backbone)
    inputs = keras.Input((height, width, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    augmentation = build_augmentation(config.augmentation, config.experiment.seed)
    if augmentation is not None:
        x = augmentation(x)
    x = preprocessing_block(spec.preprocessing, name="preprocess")(x)
    backbone = build_backbone(spec.name, (height, width, 3), config.model.weights_arg, config.model.custom_cnn)
    backbone.name = BACKBONE
    x = backbone(x, training=False if uses_pretrained_batchnorm(config) else None)
    head = config.model.head
    pooling = keras.layers.GlobalAveragePooling2D if head.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = pooling(name="pooling")(x)
    for index, units in enumerate(head.dense, start=1):
        if head.dropout > 0:
            x = keras.layers.Dropout(head.dropout, seed=config.experiment.seed + index, name=f"head_dropout_{index}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{index}")(x)
    if head.dropout > 0:
        x = keras.layers.Dropout(head.dropout, seed=config.experiment.seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"ecoclassify_{spec.name}")
