"""tf.data input pipeline for training and evaluation: paths -> uint8 image batches.

Images are decoded by the same robust Pillow loader as the scan and predict (EXIF
orientation, colour modes, reduced-size JPEG decoding), in parallel threads (Pillow releases
the GIL), overlapped with the model by ``prefetch``. When the decoded set fits the memory
budget it is cached after the first epoch, so later epochs cost no decoding at all.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from ecoclassify.data.images import DEFAULT_MAX_PIXELS, load_rgb

#: Decoded images up to this many bytes are kept in memory across epochs.
CACHE_BUDGET_BYTES = 2 * 1024**3


def decode_fn(image_size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS):
    """A tf function mapping a path string tensor to a ``(height, width, 3)`` uint8 image."""
    height, width = image_size

    def _load(path: bytes) -> np.ndarray:
        return load_rgb(os.fsdecode(path), size=(height, width), max_pixels=max_pixels).array

    def decode(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
        image.set_shape((height, width, 3))
        return image

    return decode


def crop_images(paths: list[str], boxes: list[str], image_size: tuple[int, int], crops: Any,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.data.Dataset:
    """A dataset of crops, one per ``(path, box)``, in the given order; each image decoded once.

    Consecutive samples of the same image form one decode (``prepare_data`` sorts crops by
    image), whose crops are then unbatched, so the order matches the labels.
    """
    from ecoclassify.data.crops import box_of, load_crops

    height, width = image_size
    runs: list[tuple[str, str]] = []
    for path, box in zip(paths, boxes):
        if runs and runs[-1][0] == path:
            runs[-1] = (path, runs[-1][1] + ";" + str(box))
        else:
            runs.append((path, str(box)))

    def _load(path: bytes, joined: bytes) -> np.ndarray:
        wanted = [box_of(text) for text in joined.decode("utf-8").split(";")]
        loaded = load_crops(os.fsdecode(path), wanted, (height, width), margin=crops.margin, square=crops.square,
                            max_pixels=max_pixels)
        return np.stack(loaded.arrays)

    def decode(path: tf.Tensor, joined: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(_load, [path, joined], tf.uint8, stateful=False)
        images.set_shape((None, height, width, 3))
        return images

    pairs = tf.data.Dataset.from_tensor_slices((tf.constant([p for p, _ in runs], dtype=tf.string),
                                                tf.constant([b for _, b in runs], dtype=tf.string)))
    return pairs.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def make_dataset(
    paths: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int,
    *,
    labels: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
    sample_weights: Optional[Sequence[float]] = None,
    shuffle: bool = False,
    seed: int = 0,
    cache: Optional[bool] = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    boxes: Optional[Sequence[str]] = None,
    crops: Optional[Any] = None,
) -> tf.data.Dataset:
    """Build a batched dataset of images (and one-hot labels and sample weights when given).

    Args:
        paths: Image files, already checked by the scan.
        image_size: ``(height, width)`` of the model input.
        batch_size: Images per batch; the last batch may be smaller.
        labels: Class indices; with them the dataset yields ``(image, one_hot)``.
        num_classes: Width of the one-hot labels.
        sample_weights: Per-image loss weights (class weighting); yields ``(image, one_hot, weight)``.
        shuffle: Reshuffle every epoch (training).
        seed: Shuffle seed; the same seed gives the same order of epochs.
        cache: Keep decoded images in memory after the first pass; ``None`` decides by
            ``CACHE_BUDGET_BYTES``.
        max_pixels: Decompression-bomb cap handed to the loader.
        boxes: With ``crops`` (the ``data.crops`` section): per sample its box (``"x,y,w,h"``,
            ``""`` for the whole frame); each image is decoded once for all its boxes
            (see :func:`crop_images`).
        crops: The ``data.crops`` config; None (or no ``boxes``) reads whole frames.

    Returns:
        A ``tf.data.Dataset`` ready for ``model.fit`` / ``model.predict``.
    """
    height, width = image_size
    if cache is None:
        cache = len(paths) * height * width * 3 <= CACHE_BUDGET_BYTES
    if crops is not None and boxes is not None:
        images = crop_images(list(paths), list(boxes), image_size, crops, max_pixels)
    else:
        images = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), dtype=tf.string))
        images = images.map(decode_fn(image_size, max_pixels), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    parts: list[tf.data.Dataset] = [images]
    if labels is not None:
        if num_classes is None:
            raise ValueError("num_classes is required with labels")
        onehot = tf.one_hot(tf.constant(list(labels), dtype=tf.int32), num_classes)
        parts.append(tf.data.Dataset.from_tensor_slices(onehot))
        if sample_weights is not None:
            parts.append(tf.data.Dataset.from_tensor_slices(tf.constant(list(sample_weights), dtype=tf.float32)))
    dataset = parts[0] if len(parts) == 1 else tf.data.Dataset.zip(tuple(parts))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
