"""The layers that live inside saved models: built-in Keras layers, no Lambda.

A saved ``.keras`` file contains its own preprocessing and (inactive at inference)
augmentation, so prediction needs nothing but the file and can never drift from training.
Lambda layers would make the file unsafe to load (``safe_mode=True`` refuses them), and a
custom layer would make it unloadable where ecoclassify is not installed, so the
preprocessing is :func:`preprocessing_block`, made of built-in layers only.
:class:`BackbonePreprocessing` stays registered so that models saved by ecoclassify 0.1.0
(the ``preprocess`` layer of older run folders) still load through ecoclassify; :class:`RandomCropResize`
(``augmentation.crop``, off by default) is the one custom layer a new model can contain.
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
    """Turn 0..255 RGB floats into what a backbone was trained on (models saved by 0.1.0).

    Kept registered so that older run folders load through ecoclassify; new models use
    :func:`preprocessing_block`, which needs no ecoclassify to load.

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


def preprocessing_block(mode: str, name: str = "preprocess") -> keras.Model:
    """The backbone's preprocessing as a small sub-model of built-in Keras layers.

    It computes what :class:`BackbonePreprocessing` computes (to float32 rounding) with
    ``Normalization`` (fixed mean and variance, never trained) or ``Rescaling``, and the
    RGB->BGR reordering of ``caffe`` as a ``keras.ops.flip`` node of the functional graph, so
    the saved model loads with ``keras.saving.load_model(path, safe_mode=True)`` in a
    Python that has Keras but not ecoclassify.

    Args:
        mode: One of :data:`PREPROCESSING_MODES`.
        name: Layer name of the sub-model in the classifier.

    Raises:
        ValueError: Unknown ``mode``.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"mode must be one of: {', '.join(PREPROCESSING_MODES)}. Received: mode={mode!r}")
    inputs = keras.Input((None, None, 3), name=f"{name}_input")
    x = inputs
    if mode == "caffe":
        x = keras.layers.Normalization(mean=list(_IMAGENET_BGR_MEAN), variance=[1.0, 1.0, 1.0],
                                       name="imagenet_bgr_mean")(ops.flip(x, axis=-1))
    elif mode == "tf":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_1")(x)
    elif mode == "torch":
        # (x / 255 - mean) / std == (x - 255 mean) / sqrt((255 std) ** 2)
        x = keras.layers.Normalization(mean=[255.0 * m for m in _TORCH_MEAN],
                                       variance=[(255.0 * s) ** 2 for s in _TORCH_STD], name="imagenet_mean_std")(x)
    elif mode == "lite":
        x = keras.layers.Normalization(mean=[127.0] * 3, variance=[128.0 ** 2] * 3, name="lite_127_128")(x)
    elif mode == "unit":
        x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(x)
    else:
        x = keras.layers.Identity(name="as_is")(x)
    return keras.Model(inputs, x, name=name)


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
