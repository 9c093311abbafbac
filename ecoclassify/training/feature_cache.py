"""Feature cache: train a frozen backbone's head on backbone features computed once.

When a stage trains only the head (``trainable: none``) and no augmentation runs before the
backbone, every epoch would push the same images through the same frozen backbone. The
backbone then runs once per image; the head trains on the pooled features, which is one to
two orders of magnitude faster per epoch (see ``bench/train_throughput.py``).

The head model *shares its layers* with the full model, so training it trains the full
model; the saved ``model.keras`` is always the end-to-end model.
"""

from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from ecoclassify.config import Config, StageConfig

#: The layer whose output is cached: the pooled backbone features.
FEATURE_LAYER = "pooling"


def stage_uses_cache(config: Config, stage: StageConfig, model: keras.Model) -> bool:
    """Whether ``stage`` trains on cached features (``training.cache_features``).

    ``auto`` (and ``true``) cache whenever it gives the same result as training on images: the
    backbone is frozen and nothing random happens before or inside it (augmentation, or
    dropout inside a backbone that runs in training mode). ``false`` never caches.
    """
    if config.training.cache_features is False or stage.trainable != "none" or config.augmentation.active:
        return False
    from ecoclassify.models.build import uses_pretrained_batchnorm
    from ecoclassify.models.freezing import backbone_of

    if uses_pretrained_batchnorm(config):
        return True
    return not any(isinstance(layer, keras.layers.Dropout) for layer in backbone_of(model).layers)


def split_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(feature extractor, head)``: image -> pooled features, and pooled features -> probabilities.

    The head reuses the full model's layers after ``pooling``, so their weights are shared.
    """
    features = model.get_layer(FEATURE_LAYER).output
    extractor = keras.Model(model.inputs, features, name="feature_extractor")
    head_input = keras.Input(features.shape[1:], name="features")
    x = head_input
    after = False
    for layer in model.layers:
        if after:
            x = layer(x)
        after = after or layer.name == FEATURE_LAYER
    return extractor, keras.Model(head_input, x, name="head")


def compute_features(extractor: keras.Model, images: tf.data.Dataset, verbose: Any = 0) -> np.ndarray:
    """Run the frozen part once over a dataset of image batches (labels, if any, are ignored).

    ``verbose`` is Keras's: 1 draws a progress bar, 2 prints one line when done.
    """
    batches = images.map(lambda *parts: parts[0])
    return extractor.predict(batches, verbose=verbose)


def feature_dataset(
    features: np.ndarray,
    onehot: np.ndarray,
    batch_size: int,
    *,
    sample_weights: Optional[np.ndarray] = None,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of cached features with their labels, shuffled like the image dataset would be."""
    parts: tuple[Any, ...] = (features, onehot) if sample_weights is None else (features, onehot, sample_weights)
    dataset = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        dataset = dataset.shuffle(max(1, len(features)), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
