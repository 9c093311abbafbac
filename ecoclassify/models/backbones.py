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

import re
import urllib.error
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoclassify.errors import ConfigError, ModelError
from ecoclassify.models.registry import get_backbone, register_backbone

if TYPE_CHECKING:  # pragma: no cover
    import keras


def check_input_shape(backbone: str, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a tuple, or raise ``ModelError`` unless it is ``(h, w, 3)`` with
    both sides at least the backbone's ``min_size``."""
    spec = get_backbone(backbone)
    shape = tuple(input_shape)
    valid = (
        len(shape) == 3
        and all(isinstance(d, int) for d in shape)
        and shape[2] == 3
        and min(shape[:2]) >= spec.min_size
    )
    if not valid:
        raise ModelError(
            f"input_shape for backbone {backbone!r} must be (height, width, 3) with height and "
            f"width >= {spec.min_size}. Received: input_shape={tuple(input_shape)!r}"
        )
    return shape  # type: ignore[return-value]


def check_weights_path(path: str | Path, backbone: str, formats: tuple[str, ...]) -> Path:
    """Check that a weights file exists and has one of ``formats`` as suffix; return it ``~``-expanded.

    Called before building so that a typo fails fast. Raises ``ModelError`` naming the path.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model.weights for backbone {backbone!r} must be 'imagenet' (where available), null (random "
            f"initialisation) or the path of an existing weights file; no such file. Received: model.weights='{path}'"
        )
    if not path.name.endswith(tuple(formats)):
        raise ModelError(
            f"model.weights for backbone {backbone!r} must be a file ending in {', '.join(formats)}. "
            f"Received: model.weights='{path}'"
        )
    return path


def load_weights_file(model: "keras.Model", path: str | Path, backbone: str, formats: tuple[str, ...]) -> None:
    """Load a local weights file into ``model``, turning every failure into a ``ModelError``.

    Args:
        model: The freshly built backbone (random weights).
        path: Weights file; its suffix must be one of ``formats``.
        backbone: Backbone name, used in messages.
        formats: Accepted file suffixes, e.g. ``(".weights.h5", ".h5")``.

    Raises:
        ModelError: The file is missing, has an unsupported suffix or does not fit the model;
            the message names the path, the backbone and the reason.
    """
    path = check_weights_path(path, backbone, formats)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
            reason = _partial_load_reason(model, path, caught)
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError... for a wrong file.
            raise ModelError(
                f"The weights file '{path}' does not fit backbone {backbone!r}: {short_reason(exc)}"
            ) from exc
    if reason:
        raise ModelError(f"The weights file '{path}' does not fit backbone {backbone!r}: {reason}")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _partial_load_reason(model: "keras.Model", path: Path, caught: list[warnings.WarningMessage]) -> str:
    # Keras only warns when part of a file matches and ignores surplus arrays, which would
    # leave a silently half-random or wrong backbone.
    if any("freshly-initialized" in str(warning.message) for warning in caught):
        return "some layers found no weights in the file"
    if path.name.endswith(".weights.h5"):
        import h5py

        arrays: list[str] = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda key, obj: arrays.append(key) if isinstance(obj, h5py.Dataset) else None)
        if len(arrays) > len(model.weights):
            return (
                f"the file holds {len(arrays)} arrays but the backbone has {len(model.weights)} weights, "
                "so it was saved from a different (larger) architecture or configuration"
            )
    return ""


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """One line describing ``exc``: Keras messages can embed whole tensors, so keep the head."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    # A shape mismatch is the most useful detail and sits past the first line.
    shapes = re.search(r"variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)", text)
    if shapes and shapes.group(0) not in reason:
        reason += f" ({shapes.group(0)})"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _is_download_failure(exc: BaseException) -> bool:
    # keras.utils.get_file wraps URLError/HTTPError in a bare Exception("URL fetch failure ...")
    # and raises ValueError when a downloaded or cached file fails its hash check.
    if isinstance(exc, (urllib.error.URLError, OSError, TimeoutError)):
        return True
    text = str(exc)
    return "URL fetch failure" in text or "file hash does not match" in text


def _keras_models_dir() -> str:
    """Where ``keras.utils.get_file`` caches downloads (it honours ``KERAS_HOME``)."""
    try:
        from keras.src.backend.config import keras_home  # Private, hence the fallback.

        return str(Path(keras_home()) / "models")
    except ImportError:  # pragma: no cover
        return str(Path("~/.keras/models").expanduser())


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


@register_backbone(
    "vgg16", default_size=224, min_size=32, preprocessing="caffe",
    boundaries={"block4": "block4_conv1", "block5": "block5_conv1"}, fine_tune_from="block5_conv1",
    description="VGG16 (14.7 M parameters): plain 3x3 convolutions, robust but heavy.",
)
def build_vgg16(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the VGG16 convolutional base (input: caffe-preprocessed BGR minus ImageNet mean)."""
    return _build_application(
        "vgg16", "VGG16", input_shape, weights,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone(
    "vgg19", default_size=224, min_size=32, preprocessing="caffe",
    boundaries={"block4": "block4_conv1", "block5": "block5_conv1"}, fine_tune_from="block5_conv1",
    description="VGG19 (20.0 M parameters): VGG16 with three more convolutions.",
)
def build_vgg19(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the VGG19 convolutional base (input: caffe-preprocessed)."""
    return _build_application(
        "vgg19", "VGG19", input_shape, weights,
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone(
    "resnet50", default_size=224, min_size=32, preprocessing="caffe",
    boundaries={"conv4": "conv4_block1_1_conv", "conv5": "conv5_block1_1_conv"},
    fine_tune_from="conv5_block1_1_conv",
    description="ResNet50 (23.5 M parameters): residual network, a strong general baseline.",
)
def build_resnet50(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the ResNet50 convolutional base (input: caffe-preprocessed)."""
    return _build_application(
        "resnet50", "ResNet50", input_shape, weights,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


@register_backbone(
    "mobilenet_v2", default_size=224, min_size=32, preprocessing="tf",
    # Blocks 13-16 are the last two stages (160 and 320 channels at 1/32 resolution).
    boundaries={"block_13": "block_13_expand", "block_16": "block_16_expand", "top": "Conv_1"},
    fine_tune_from="block_13_expand",
    description="MobileNetV2 (2.2 M parameters): small and fast, good on CPU.",
)
def build_mobilenet_v2(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the MobileNetV2 (alpha 1.0) convolutional base (input: x / 127.5 - 1)."""
    # Keras ships ImageNet files for these sides only and falls back to the 224 one otherwise.
    rows = input_shape[0] if input_shape[0] in (96, 128, 160, 192, 224) else 224
    return _build_application(
        "mobilenet_v2", "MobileNetV2", input_shape, weights,
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    )


@register_backbone(
    "mobilenet_v3_large", default_size=224, min_size=32, preprocessing="none",
    # expanded_conv_12..14 form the last (160-channel) stage; conv_1 is the 960-channel head.
    boundaries={"stage_112": "expanded_conv_10_expand", "stage_160": "expanded_conv_12_expand", "top": "conv_1"},
    fine_tune_from="expanded_conv_12_expand",
    description="MobileNetV3-Large (3.0 M parameters): fast on CPU; rescales 0..255 input itself.",
)
def build_mobilenet_v3_large(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the MobileNetV3-Large base, including its own rescaling layer (input: raw 0..255)."""
    return _build_application(
        "mobilenet_v3_large", "MobileNetV3Large", input_shape, weights,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", include_preprocessing=True,
    )


@register_backbone(
    "efficientnet_b0", default_size=224, min_size=32, preprocessing="none",
    boundaries={"stage5": "block5a_expand_conv", "stage6": "block6a_expand_conv",
                "stage7": "block7a_expand_conv", "top": "top_conv"},
    fine_tune_from="block6a_expand_conv",
    description="EfficientNet-B0 (4.0 M parameters): accurate for its size; normalises 0..255 input itself.",
)
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


@register_backbone(
    "efficientnet_v2_s", default_size=384, min_size=32, preprocessing="none",
    boundaries={"stage5": "block5a_expand_conv", "stage6": "block6a_expand_conv", "top": "top_conv"},
    fine_tune_from="block6a_expand_conv",
    description="EfficientNetV2-S (20.2 M parameters): accurate, slower; rescales 0..255 input itself.",
)
def build_efficientnet_v2_s(input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None) -> "keras.Model":
    """Build the EfficientNetV2-S base, including its own rescaling layer (input: raw 0..255)."""
    return _build_application(
        "efficientnet_v2_s", "EfficientNetV2S", input_shape, weights,
        "efficientnetv2-s_notop.h5", include_preprocessing=True,
    )


@register_backbone(
    "convnext_tiny", default_size=224, min_size=32, preprocessing="none",
    # Each downsampling layer opens a stage; stage 3 is the last one (768 channels).
    boundaries={"stage_2": "convnext_tiny_downsampling_block_1", "stage_3": "convnext_tiny_downsampling_block_2"},
    fine_tune_from="convnext_tiny_downsampling_block_2",
    description="ConvNeXt-Tiny (27.8 M parameters): modern and accurate; normalises 0..255 input itself.",
)
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
@register_backbone(
    "custom_cnn", default_size=128, min_size=32, preprocessing="unit", boundaries={}, fine_tune_from=None,
    imagenet=False, description="Small VGG-style CNN trained from scratch; blocks, filters and dropout set by its options.",
)
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


# Registers efficientnet_lite0 (kept in its own module: it is a full architecture, not a wrapper).
from ecoclassify.models import efficientnet_lite  # noqa: E402,F401
