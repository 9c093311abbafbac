"""Tests of the registered backbone builders: real TensorFlow, tiny inputs, random weights.

Every test over backbones is parametrised by ``list_backbones()``, so a backbone is tested the
day it is registered.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from ecoclassify.errors import ConfigError, ModelError
from ecoclassify.config.backbones import Preprocessing, get_backbone, list_backbones
from ecoclassify.models.registry import build_backbone, registered_builders

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
HED_VGG16 = SHARED / "weights" / "vgg16_hed_bsds500_notop.weights.h5"
REPO = Path(__file__).resolve().parents[2]


def _test_size(name: str) -> int:
    return max(get_backbone(name).min_size, 32)


@functools.cache
def _built(name: str):
    """Build each backbone once per session: several tests inspect the same model."""
    size = _test_size(name)
    return build_backbone(name, (size, size, 3), None)


def _layer_types(model) -> set[str]:
    return {type(layer).__name__ for layer in model.layers}


def test_importing_the_backbones_does_not_import_tensorflow():
    code = (
        "import sys, ecoclassify.models.backbones as b; "
        "from ecoclassify.models.registry import registered_builders; registered_builders(); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))[:5]"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_required_backbones_are_registered():
    required = {
        "vgg16", "vgg19", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
        "efficientnet_v2_s", "convnext_tiny", "custom_cnn", "efficientnet_lite0", "efficientnet_lite1",
        "efficientnet_lite2",
    }
    assert required <= set(list_backbones())


def test_every_backbone_a_config_can_name_has_a_builder_and_every_builder_a_spec():
    assert registered_builders() == list_backbones()


@pytest.mark.parametrize("name", list_backbones())
def test_every_spec_declares_consistent_sizes_modes_and_formats(name):
    spec = get_backbone(name)
    assert spec.name == name
    assert 0 < spec.min_size <= spec.default_size
    assert spec.preprocessing in typing.get_args(Preprocessing)
    assert spec.weight_formats and all(fmt.startswith(".") for fmt in spec.weight_formats)
    assert spec.description
    if spec.fine_tune_from is not None:
        assert spec.fine_tune_from in spec.boundaries.values()


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_builds_at_its_minimum_size(name):
    size = _test_size(name)
    model = _built(name)
    # An eager call: predict() would trace a tf.function, several seconds for the larger nets.
    features = np.asarray(model(np.zeros((1, size, size, 3), "float32"), training=False))
    assert features.ndim == 4, "backbones return a feature map: no pooling, no top"
    assert features.shape[0] == 1 and min(features.shape[1:]) >= 1
    assert np.isfinite(features).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_declared_boundaries_and_fine_tune_from_name_layers_of_the_built_backbone(name):
    spec = get_backbone(name)
    names = [layer.name for layer in _built(name).layers]
    missing = {key: layer for key, layer in spec.boundaries.items() if layer not in names}
    assert not missing, f"{name} boundaries name layers that do not exist: {missing}"
    if spec.fine_tune_from is not None:
        # Unfreezing from this layer must leave something frozen and something trainable.
        assert 0 < names.index(spec.fine_tune_from) < len(names) - 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_only_backbones_with_preprocessing_none_scale_their_own_input(name):
    # Mode "none" promises the network normalises raw 0..255 itself; any other mode is applied
    # outside, so a scaling layer inside would preprocess twice.
    scales_input = bool(_layer_types(_built(name)) & {"Rescaling", "Normalization"})
    assert scales_input == (get_backbone(name).preprocessing == "none")


def test_an_input_smaller_than_the_minimum_size_is_a_model_error_naming_input_shape():
    with pytest.raises(ModelError, match=r"vgg16.*>= 32.*Received: input_shape=\(16, 16, 3\)"):
        build_backbone("vgg16", (16, 16, 3), None)


def test_imagenet_weights_offline_fail_with_a_message_on_passing_a_local_file():
    from ecoclassify.models.backbones import _keras_models_dir

    filename = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if (Path(_keras_models_dir()) / filename).exists():
        pytest.skip(f"{filename} is cached in {_keras_models_dir()}, so nothing is downloaded")
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        pytest.skip("this machine reaches the internet, so the ImageNet download would succeed")
    except OSError:
        pass
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # A half-open network must fail the download, not hang the suite.
    try:
        with pytest.raises(ModelError) as info:
            build_backbone("vgg16", (32, 32, 3), "imagenet")
    finally:
        socket.setdefaulttimeout(previous)
    message = str(info.value)
    assert "could not be downloaded" in message
    assert f"model.weights: /path/to/{filename}" in message
    assert f"place the file in {_keras_models_dir()}/" in message and "\n" not in message


def test_a_missing_weights_file_is_a_model_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(ModelError, match="resnet50") as info:
        build_backbone("resnet50", (32, 32, 3), missing)
    assert str(missing) in str(info.value) and "Received: model.weights=" in str(info.value)


def test_a_weights_file_with_an_unsupported_suffix_is_a_model_error_listing_the_formats(tmp_path):
    odd = tmp_path / "weights.pt"
    odd.write_bytes(b"not keras")
    with pytest.raises(ModelError, match=r"\.weights\.h5, \.h5.*weights\.pt"):
        build_backbone("custom_cnn", (32, 32, 3), odd)


def test_a_weights_file_from_a_larger_configuration_is_a_model_error_not_a_partial_load(tmp_path):
    path = tmp_path / "larger.weights.h5"
    build_backbone("custom_cnn", (32, 32, 3), None, {"filters": [4, 8]}).save_weights(path)
    with pytest.raises(ModelError, match=r"holds 20 arrays but the backbone has 10 weights"):
        build_backbone("custom_cnn", (32, 32, 3), path, {"filters": [4]})


def test_a_weights_file_from_another_architecture_is_a_model_error_naming_path_and_backbone(tmp_path):
    path = tmp_path / "small.weights.h5"
    build_backbone("custom_cnn", (32, 32, 3), None, {"filters": [4]}).save_weights(path)
    with pytest.raises(ModelError) as info:
        build_backbone("custom_cnn", (32, 32, 3), path, {"filters": [8]})
    message = str(info.value)
    assert str(path) in message and "'custom_cnn'" in message and "does not fit" in message
    assert len(message) < 800, "Keras' tensor dumps must not reach the user"


def test_custom_cnn_follows_its_options():
    options = {"filters": [4, 8], "convs_per_block": 1, "kernel_size": 5, "batch_norm": False, "dropout": 0.25}
    model = build_backbone("custom_cnn", (32, 48, 3), None, options)
    names = [layer.name for layer in model.layers]
    assert names[1:] == [
        "block1_conv1", "block1_relu1", "block1_pool", "block1_dropout",
        "block2_conv1", "block2_relu1", "block2_pool", "block2_dropout",
    ]
    assert model.get_layer("block1_conv1").kernel_size == (5, 5)
    assert tuple(model.output.shape) == (None, 8, 12, 8)


def test_custom_cnn_defaults_to_three_batch_normalised_blocks_when_options_is_none():
    model = build_backbone("custom_cnn", (32, 32, 3), None, None)
    names = {layer.name for layer in model.layers}
    assert {"block3_conv2", "block3_bn2", "block3_pool"} <= names and "block4_conv1" not in names
    assert not any("dropout" in n for n in names)
    assert tuple(model.output.shape) == (None, 4, 4, 128)


def test_custom_cnn_accepts_an_options_object_with_missing_attributes():
    class Options:
        filters = [4]

    model = build_backbone("custom_cnn", (32, 32, 3), None, Options())
    assert tuple(model.output.shape) == (None, 16, 16, 4) and model.get_layer("block1_conv2")


def test_custom_cnn_weights_round_trip_through_a_file(tmp_path):
    options = {"filters": [4, 8]}
    original = build_backbone("custom_cnn", (32, 32, 3), None, options)
    path = tmp_path / "cnn.weights.h5"
    original.save_weights(path)
    restored = build_backbone("custom_cnn", (32, 32, 3), path, options)
    for a, b in zip(original.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_custom_cnn_refuses_imagenet_weights():
    with pytest.raises(ModelError, match="custom_cnn.*no pretrained weights.*Received: model.weights='imagenet'"):
        build_backbone("custom_cnn", (32, 32, 3), "imagenet")


def test_custom_cnn_rejects_an_input_too_small_for_its_number_of_blocks():
    with pytest.raises(ModelError, match=r"6 blocks needs height and width >= 64"):
        build_backbone("custom_cnn", (32, 32, 3), None, {"filters": [4] * 6})


@pytest.mark.parametrize(
    "options, key",
    [({"filters": []}, "filters"), ({"filters": [8, -1]}, "filters"),
     ({"convs_per_block": 0}, "convs_per_block"), ({"dropout": 1.0}, "dropout")],
)
def test_invalid_custom_cnn_options_are_a_config_error_naming_the_option(options, key):
    with pytest.raises(ConfigError, match=rf"custom_cnn {key} .*Received: {key}="):
        build_backbone("custom_cnn", (32, 32, 3), None, options)


@pytest.mark.slow
def test_efficientnet_b0_from_a_keras_imagenet_file_gets_the_variance_keras_would_correct(tmp_path):
    # Keras' ImageNet file stores standard deviations as the Normalization variance
    # (tensorflow/tensorflow#49930); loaded from a path, the builder must square them.
    spec = get_backbone("efficientnet_b0")
    model = build_backbone(spec.name, (32, 32, 3), None)
    norm = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    norm.adapt_mean.assign(np.array([0.485, 0.456, 0.406], "float32"))
    norm.adapt_variance.assign(np.array([0.229, 0.224, 0.225], "float32"))
    path = tmp_path / "efficientnetb0_like.weights.h5"
    model.save_weights(path)
    loaded = build_backbone(spec.name, (32, 32, 3), path)
    norm = next(layer for layer in loaded.layers if type(layer).__name__ == "Normalization")
    pixel = np.full((1, 1, 1, 3), 255.0, "float32") * np.array([0.6, 0.5, 0.4], "float32")
    expected = (np.array([0.6, 0.5, 0.4]) - [0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(np.ravel(norm(pixel / 255.0)), expected, rtol=1e-5)


@pytest.mark.shared
@pytest.mark.slow
def test_the_shared_hed_vgg16_weights_load_from_a_path():
    if not HED_VGG16.exists():
        pytest.skip(f"../shared/weights not present: {HED_VGG16} is needed for this test")
    import h5py

    model = build_backbone("vgg16", (32, 32, 3), HED_VGG16)
    with h5py.File(HED_VGG16, "r") as f:
        # Keras 3 stores layers in order under class-based names; conv2d is block1_conv1.
        kernel = f["layers/conv2d/vars/0"][()]
    np.testing.assert_array_equal(model.get_layer("block1_conv1").kernel.numpy(), kernel)
