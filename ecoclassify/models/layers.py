"""Custom Keras layers that live inside saved models: registered, serialisable, no Lambda.

A saved ``.keras`` file contains its own preprocessing and (inactive at inference)
augmentation, so prediction needs nothing but the file and can never drift from training.
Lambda layers would make the file unsafe to load (``safe_mode=True`` refuses them).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ecoclassify.config import AugmentationConfig

_PACKAGE = "ecoclassify"

_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "unit", "none")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BackbonePreprocessing(keras.layers.Layer):
    """Turn 0..255 RGB floats into what a backbone was trained on.

    Modes: ``caffe`` (RGB->BGR, minus the ImageNet mean; VGG, ResNet), ``tf`` (to [-1, 1];
    MobileNetV2), ``torch`` (to [0, 1], then ImageNet mean/std), ``lite`` ((x - 127) / 128;
    EfficientNet-Lite), ``unit`` (to [0, 1]; the custom CNN), ``none`` (the backbone does it).
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"mode must be one of: {', '.join(PREPROCESSING_MODES)}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_IMAGENET_BGR_MEAN, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomCropResize(keras.layers.Layer):
    """Training-only random crop of ``[1 - crop, 1]`` of each side at a random place, resized back.

    At inference the image passes unchanged (unlike Keras' ``RandomCrop``, which centre-crops
    at inference and would change what the deployed model sees).
    """

    def __init__(self, crop: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= crop < 1.0:
            raise ValueError(f"crop must be in [0, 1). Received: crop={crop!r}")
        self.crop = float(crop)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.crop == 0.0:
            return inputs
        x = ops.cast(inputs, self.compute_dtype)
        batch = ops.shape(x)[0]
        height = ops.cast(ops.shape(x)[1], "float32")
        width = ops.cast(ops.shape(x)[2], "float32")
        scale = keras.random.uniform((batch, 1), 1.0 - self.crop, 1.0, seed=self.seed_generator)
        where = keras.random.uniform((batch, 2), 0.0, 1.0, seed=self.seed_generator)
        # Projective transform rows [a0 a1 a2 b0 b1 b2 c0 c1] map output to input pixels:
        # x_in = s * x_out + tx, y_in = s * y_out + ty, with the window inside the image.
        tx = where[:, :1] * (1.0 - scale) * width
        ty = where[:, 1:] * (1.0 - scale) * height
        zeros = ops.zeros_like(scale)
        transform = ops.concatenate([scale, zeros, tx, zeros, scale, ty, zeros, zeros], axis=1)
        return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="reflect")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "crop": self.crop, "seed": self.seed}


def build_augmentation(config: AugmentationConfig, seed: int) -> keras.Sequential | None:
    """Keras preprocessing layers for ``augmentation``; ``None`` when nothing is enabled.

    The layers act only when the model is called with ``training=True`` (during ``fit``), and
    they work on 0..255 values, before the backbone's preprocessing.
    """
    if not config.active:
        return None
    layers: list[keras.layers.Layer] = []
    if config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, seed=seed, name="flip"))
    if config.crop > 0:
        layers.append(RandomCropResize(config.crop, seed=seed + 1, name="crop"))
    if config.rotation > 0:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed + 2, name="rotation"))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed + 3, name="zoom"))
    if config.translation > 0:
        layers.append(keras.layers.RandomTranslation(
            config.translation, config.translation, fill_mode="reflect", seed=seed + 4, name="translation"))
    if config.contrast > 0:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 5, name="contrast"))
    if config.brightness > 0:
        layers.append(keras.layers.RandomBrightness(
            config.brightness, value_range=(0, 255), seed=seed + 6, name="brightness"))
    return keras.Sequential(layers, name="augmentation")
