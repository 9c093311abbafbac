"""Backbone builders: convolutional feature extractors registered by name.

Every builder has the same signature, ``build(input_shape, weights, options=None)``, and returns
the feature map of the network without its classification top and without pooling. Its input
is float32 that has *already* been preprocessed according to the spec's ``preprocessing`` mode
(for mode ``none`` that means raw 0..255 RGB, because the network normalises it itself).

Arguments shared by every ``build_*`` function:
    input_shape: ``(height, width, 3)``, each side at least the spec's ``min_size``.
    weights: ``"imagenet"``, ``None`` (random initialisation) or the path of a local weights
        file with one of the spec's ``weight_formats``.
    options: The backbone's own config section; only ``custom_cnn`` uses it, the others accept
        it so callers never special-case a family.
They return a ``keras.Model`` and raise ``ModelError`` for a bad input shape, a failed ImageNet
download (the message says how to pass a local file) or a weights file that does not fit.

Keras is imported inside the builders, never at module import, so that config validation can
list the registered backbones without paying for a TensorFlow import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoclassify.errors import ConfigError, ModelError
from ecoclassify.config.backbones import get_backbone
from ecoclassify.models.registry import register_backbone
from ecoclassify.models.weights import (
    _is_download_failure, _keras_models_dir, check_input_shape, check_weights_path, load_weights_file, short_reason,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras


def _build_application(
    backbone: str,
    constructor_name: str,
    input_shape: tuple[int, int, int],
    weights: str | Path | None,
    imagenet_file: str,
    **kwargs: Any,
) -> "keras.Model":
    """Build a ``keras.applications`` feature extractor with ecoclassify's weights handling."""
    import keras

    constructor = getattr(keras.applications, constructor_name)
    spec = get_backbone(backbone)
    shape = check_input_shape(backbone, input_shape)
    common = dict(include_top=False, pooling=None, input_shape=shape, **kwargs)
    if weights is None:
        return constructor(weights=None, **common)
    if isinstance(weights, str) and weights == "imagenet":
        try:
            return constructor(weights="imagenet", **common)
        except Exception as exc:
            if not _is_download_failure(exc):
                raise
            raise ModelError(
                f"The ImageNet weights for backbone {backbone!r} could not be downloaded "
                f"({short_reason(exc)}). Without internet access, fetch {imagenet_file} on another "
                f"machine and set `model.weights: /path/to/{imagenet_file}`, or place the file in "
                f"{_keras_models_dir()}/ where Keras finds it without downloading; "
                "`model.weights: null` trains from random initialisation."
            ) from exc
    path = check_weights_path(weights, backbone, spec.weight_formats)  # Fail before a slow build.
    model = constructor(weights=None, **common)
    load_weights_file(model, path, backbone, spec.weight_formats)
    return model


@register_backbone("vgg16")
def build_vgg16(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the VGG16 convolutional base (input: caffe-preprocessed BGR minus ImageNet mean)."""
    return _build_application(
        "vgg16", "VGG16", input_shape, weights,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone("vgg19")
def build_vgg19(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the VGG19 convolutional base (input: caffe-preprocessed)."""
    return _build_application(
        "vgg19", "VGG19", input_shape, weights,
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone("resnet50")
def build_resnet50(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the ResNet50 convolutional base (input: caffe-preprocessed)."""
    return _build_application(
        "resnet50", "ResNet50", input_shape, weights,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone("mobilenet_v2")
def build_mobilenet_v2(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the MobileNetV2 (alpha 1.0) convolutional base (input: x / 127.5 - 1)."""
    # Keras ships ImageNet files for these sides only and falls back to the 224 one otherwise.
    rows = input_shape[0] if input_shape[0] in (96, 128, 160, 192, 224) else 224
    return _build_application(
        "mobilenet_v2", "MobileNetV2", input_shape, weights,
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    )


@register_backbone("mobilenet_v3_large")
def build_mobilenet_v3_large(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the MobileNetV3-Large base, including its own rescaling layer (input: raw 0..255)."""
    return _build_application(
        "mobilenet_v3_large", "MobileNetV3Large", input_shape, weights,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", include_preprocessing=True,
    )


@register_backbone("efficientnet_b0")
def build_efficientnet_b0(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the EfficientNet-B0 base, including its own normalisation (input: raw 0..255)."""
    model = _build_application(
        "efficientnet_b0", "EfficientNetB0", input_shape, weights, "efficientnetb0_notop.h5",
    )
    if weights is not None and weights != "imagenet":
        _fix_imagenet_normalization(model)
    return model


# Keras' efficientnetb0_notop.h5 stores the ImageNet *standard deviations* as the Normalization
# variance; with weights="imagenet" Keras adds a Rescaling layer to compensate
# (tensorflow/tensorflow#49930). A model built with weights=None has no such layer, so loading
# that file from a path would silently normalise wrongly; squaring the variance is equivalent.
_KERAS_IMAGENET_STDDEV = (0.229, 0.224, 0.225)


def _fix_imagenet_normalization(model: "keras.Model") -> None:
    import keras
    import numpy as np

    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            stored = getattr(layer, "adapt_variance", None)  # The variable the file is loaded into.
            if stored is not None and np.allclose(np.ravel(stored), _KERAS_IMAGENET_STDDEV, atol=1e-4):
                squared = np.square(np.asarray(_KERAS_IMAGENET_STDDEV, dtype="float32"))
                stored.assign(squared.reshape(tuple(stored.shape)))
                layer.finalize_state()  # Refreshes the cached tensor that call() uses.
            return


@register_backbone("efficientnet_v2_s")
def build_efficientnet_v2_s(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the EfficientNetV2-S base, including its own rescaling layer (input: raw 0..255)."""
    return _build_application(
        "efficientnet_v2_s", "EfficientNetV2S", input_shape, weights,
        "efficientnetv2-s_notop.h5", include_preprocessing=True,
    )


@register_backbone("convnext_tiny")
def build_convnext_tiny(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the ConvNeXt-Tiny base, including its own normalisation (input: raw 0..255)."""
    return _build_application(
        "convnext_tiny", "ConvNeXtTiny", input_shape, weights, "convnext_tiny_notop.h5",
        include_preprocessing=True,
    )


_CUSTOM_DEFAULTS: dict[str, Any] = {
    "filters": [32, 64, 128], "convs_per_block": 2, "kernel_size": 3, "batch_norm": True, "dropout": 0.0,
}


def _custom_option(options: Any, name: str) -> Any:
    if options is None:
        return _CUSTOM_DEFAULTS[name]
    value = options.get(name) if isinstance(options, dict) else getattr(options, name, None)
    return _CUSTOM_DEFAULTS[name] if value is None else value


# fine_tune_from is None because the last block's name depends on options.filters; boundaries
# are empty for the same reason. A from-scratch network is trained whole anyway.
@register_backbone("custom_cnn")
def build_custom_cnn(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build a small VGG-style CNN: per block, convolutions, 2x2 max-pool, optional dropout.

    Args:
        input_shape: ``(height, width, 3)``; each side must survive one halving per block.
        weights: ``None`` or a local weights file saved from the same configuration.
        options: Object (or dict) with ``filters`` (per block, default ``[32, 64, 128]``),
            ``convs_per_block`` (2), ``kernel_size`` (3), ``batch_norm`` (True), ``dropout`` (0.0).
            ``None`` uses the defaults.

    Returns:
        The network up to the last block's pooling/dropout; layers are named ``block{i}_conv{j}``
        and ``block{i}_pool`` (i, j from 1).

    Raises:
        ConfigError: An option is out of range.
        ModelError: ``weights="imagenet"``, a bad input shape or an unusable weights file.
    """
    filters = list(_custom_option(options, "filters"))
    convs = _custom_option(options, "convs_per_block")
    kernel = _custom_option(options, "kernel_size")
    batch_norm = bool(_custom_option(options, "batch_norm"))
    dropout = float(_custom_option(options, "dropout"))
    if not filters or not all(isinstance(f, int) and f > 0 for f in filters):
        raise ConfigError(f"custom_cnn filters must be a non-empty list of positive integers. Received: filters={filters!r}")
    for key, value in (("convs_per_block", convs), ("kernel_size", kernel)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"custom_cnn {key} must be a positive integer. Received: {key}={value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"custom_cnn dropout must be in [0, 1). Received: dropout={dropout!r}")
    if isinstance(weights, str) and weights == "imagenet":
        raise ModelError(
            "backbone 'custom_cnn' has no pretrained weights: model.weights must be null or the path of "
            "a weights file saved from the same custom_cnn settings. Received: model.weights='imagenet'"
        )
    shape = check_input_shape("custom_cnn", input_shape)
    formats = get_backbone("custom_cnn").weight_formats
    if weights is not None:
        check_weights_path(weights, "custom_cnn", formats)
    smallest = 2 ** len(filters)  # Each block halves the side; it must stay at least 1 pixel.
    if min(shape[:2]) < smallest:
        raise ModelError(
            f"input_shape for custom_cnn with {len(filters)} blocks needs height and width >= {smallest}. "
            f"Received: input_shape={shape!r}"
        )

    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for i, n_filters in enumerate(filters, start=1):
        for j in range(1, convs + 1):
            # The BN shift makes a conv bias redundant.
            x = layers.Conv2D(n_filters, kernel, padding="same", use_bias=not batch_norm, name=f"block{i}_conv{j}")(x)
            if batch_norm:
                # Momentum 0.9, not Keras' 0.99: a from-scratch CNN on a few hundred images sees
                # few steps, and slow moving statistics leave inference far from training mode.
                x = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn{j}")(x)
            x = layers.ReLU(name=f"block{i}_relu{j}")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"block{i}_dropout")(x)
    model = keras.Model(inputs, x, name="custom_cnn")
    if weights is not None:
        load_weights_file(model, weights, "custom_cnn", formats)
    return model
