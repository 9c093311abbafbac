"""The assembled classifier: in-model preprocessing and augmentation, freezing, save and reload."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from ecoclassify.cli.app import main
from ecoclassify.config import Config, FromLayer, LastN, load_config
from ecoclassify.errors import ConfigError
from ecoclassify.models.build import build_model
from ecoclassify.models.freezing import apply_trainable, backbone_of
from ecoclassify.models.io import load_classifier
from ecoclassify.models.layers import (
    PREPROCESSING_MODES,
    BackbonePreprocessing,
    RandomCropResize,
    preprocessing_block,
)
from ecoclassify.config.backbones import list_backbones

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def config_for(backbone: str, size: int = 32, **augmentation) -> Config:
    return Config.from_dict({
        "data": {"source": "demo", "image_size": [size, size]},
        "model": {"backbone": backbone, "weights": "none", "head": {"dense": [8], "dropout": 0.2},
                  "custom_cnn": {"filters": [4, 8], "convs_per_block": 1}},
        "augmentation": {"enabled": bool(augmentation), **augmentation},
    })


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_makes_a_model_that_saves_reloads_safely_and_predicts_the_same(backbone, tmp_path):
    model = build_model(config_for(backbone), num_classes=3)
    assert model.inputs[0].dtype == "uint8" and model.inputs[0].shape[1:] == (32, 32, 3)
    assert [layer.name for layer in model.layers][-1] == "predictions"
    batch = images()
    before = model(batch, training=False).numpy()
    assert before.shape == (2, 3) and np.allclose(before.sum(axis=1), 1, atol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded(batch, training=False).numpy(), before, rtol=1e-5, atol=1e-6)


def test_the_model_applies_the_backbone_preprocessing_inside_itself_with_built_in_layers_only():
    model = build_model(config_for("vgg16"), num_classes=2)
    block = model.get_layer("preprocess")
    assert [type(layer).__name__ for layer in block.layers] == ["InputLayer", "Normalization"]
    x = images(2).astype("float32")
    np.testing.assert_allclose(block(x).numpy(), keras.applications.vgg16.preprocess_input(x.copy()), atol=1e-4)
    everything = [model, *model.layers, *block.layers]
    assert all(type(layer).__module__.startswith("keras.") for layer in everything), \
        [type(layer).__module__ for layer in everything]


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_the_built_in_preprocessing_gives_the_numbers_of_the_old_layer_in_every_mode(mode):
    x = np.concatenate([images(3).astype("float32"), np.zeros((1, 32, 32, 3), "float32"),
                        np.full((1, 32, 32, 3), 255.0, "float32")])
    np.testing.assert_allclose(preprocessing_block(mode)(x).numpy(), BackbonePreprocessing(mode)(x).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_a_run_folder_saved_with_the_old_preprocessing_layer_still_loads_through_ecoclassify(tmp_path):
    # How 0.1.0 built the model: the custom BackbonePreprocessing layer, not built-in layers.
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = BackbonePreprocessing("caffe", name="preprocess")(keras.layers.Rescaling(1.0, name="to_float")(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    old = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x))
    old.save(tmp_path / "model.keras")
    (tmp_path / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    loaded = load_classifier(tmp_path)
    batch = images(3)
    np.testing.assert_allclose(loaded.model(batch).numpy(), old(batch).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode, reference", [
    ("caffe", lambda x: keras.applications.vgg16.preprocess_input(x.copy())),
    ("tf", lambda x: keras.applications.mobilenet_v2.preprocess_input(x.copy())),
    ("torch", lambda x: keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")),
    ("lite", lambda x: (x - 127.0) / 128.0),
    ("unit", lambda x: x / 255.0),
    ("none", lambda x: x),
])
def test_preprocessing_modes_match_the_keras_applications_functions(mode, reference):
    x = images(3).astype("float32")
    np.testing.assert_allclose(BackbonePreprocessing(mode)(x).numpy(), reference(x), rtol=1e-5, atol=1e-4)


def test_an_unknown_preprocessing_mode_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"mode must be one of: caffe, tf, torch, lite, unit, none\. Received"):
        BackbonePreprocessing("imagenet")


def test_augmentation_changes_images_only_in_training():
    model = build_model(config_for("custom_cnn", flip="horizontal", rotation=0.1, zoom=0.1, crop=0.2,
                                   contrast=0.2, brightness=0.2), num_classes=2)
    augmentation = model.get_layer("augmentation")
    assert [layer.name for layer in augmentation.layers] == ["flip", "crop", "rotation", "zoom", "contrast",
                                                            "brightness"]
    batch = images(4).astype("float32")
    np.testing.assert_array_equal(augmentation(batch, training=False).numpy(), batch)
    assert not np.allclose(augmentation(batch, training=True).numpy(), batch)
    np.testing.assert_array_equal(model(batch, training=False).numpy(), model(batch, training=False).numpy())


def test_no_augmentation_layer_exists_when_augmentation_is_disabled():
    model = build_model(config_for("custom_cnn"), num_classes=2)
    assert "augmentation" not in [layer.name for layer in model.layers]


def test_random_crop_resize_keeps_the_shape_and_crops_within_the_image():
    layer = RandomCropResize(0.5, seed=1)
    gradient = np.tile(np.arange(32, dtype="float32")[None, None, :, None], (2, 32, 1, 3))
    out = layer(gradient, training=True).numpy()
    assert out.shape == gradient.shape
    # A crop of a left-to-right ramp is still a ramp, inside the original value range.
    assert out.min() >= 0 and out.max() <= 31 and (np.diff(out[:, 16, :, 0], axis=1) >= -1e-3).all()
    assert not np.allclose(out, gradient)


@pytest.mark.parametrize("trainable, expected", [
    ("none", set()),
    ("all", {"block1_conv1", "block1_bn1", "block2_conv1", "block2_bn1"}),
    (LastN(last_n=4), {"block2_conv1", "block2_bn1"}),  # block2: conv, bn, relu, pool
    (FromLayer(from_layer="block2_conv1"), {"block2_conv1", "block2_bn1"}),
])
def test_the_freezing_policy_unfreezes_exactly_the_configured_layers(trainable, expected):
    model = build_model(config_for("custom_cnn"), num_classes=2)
    summary = apply_trainable(model, trainable)
    assert set(summary.trainable_backbone_layers) == expected
    backbone = backbone_of(model)
    trained = {layer.name for layer in backbone.layers if layer.trainable and layer.trainable_weights}
    assert trained == expected
    head = model.get_layer("predictions")
    assert head.trainable and summary.trainable_params >= sum(int(np.prod(w.shape)) for w in head.weights)


def test_last_n_beyond_the_backbone_depth_is_a_config_error():
    model = build_model(config_for("custom_cnn"), num_classes=2)
    with pytest.raises(ConfigError, match=r"stages\[1\]\.trainable\.last_n must be at most"):
        apply_trainable(model, LastN(last_n=500), key="training.stages[1].trainable")


def test_a_keras_file_without_labels_json_is_refused_with_a_clear_message(tmp_path):
    model = build_model(config_for("custom_cnn"), num_classes=2)
    model.save(tmp_path / "model.keras")
    from ecoclassify.errors import ModelError

    with pytest.raises(ModelError, match="labels.json is missing"):
        load_classifier(tmp_path / "model.keras")
    (tmp_path / "labels.json").write_text('{"classes": ["a", "b", "c"]}')
    with pytest.raises(ModelError, match="lists 3 classes but the model has 2 outputs"):
        load_classifier(tmp_path)
    (tmp_path / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    loaded = load_classifier(tmp_path / "model.keras")
    assert loaded.classes == ["deer", "fox"] and loaded.image_size == (32, 32)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.training.stages


def test_the_backbones_command_lists_every_registered_backbone():
    result = CliRunner().invoke(main, ["backbones", "--no-params"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "default_size" in lines[0] and "fine_tune_from" in lines[0]
    assert sorted(line.split()[0] for line in lines[1:]) == list_backbones()
    assert any(line.split()[:4] == ["vgg16", "224", "32", "caffe"] for line in lines)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A run-like folder with a real two-class ``model.keras`` and its ``labels.json``."""
    folder = tmp_path_factory.mktemp("saved")
    build_model(config_for("custom_cnn"), num_classes=2).save(folder / "model.keras")
    (folder / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    return folder


def model_error(source: Path) -> str:
    from ecoclassify.errors import ModelError

    with pytest.raises(ModelError) as info:
        load_classifier(source)
    return str(info.value)


@pytest.mark.parametrize(("labels", "expected"), [
    ('{"classes": "deer"}', 'must be a non-empty list of class names (strings) in the model\'s output order. '
                            'Received: classes="deer"'),
    ('{"classes": {"0": "deer", "1": "fox"}}', 'Received: classes={"0": "deer", "1": "fox"}'),
    ('{"classes": ["deer", "deer"]}', "must not repeat a name, or two outputs would mean the same class. "
                                      "Received repeated: deer"),
    ('["deer", "fox"]', "must be an object with a list 'classes'"),
    ('{"classes": ["deer", null]}', 'Received: classes=["deer", null]'),
], ids=["string", "dict", "duplicates", "bare_list", "null_name"])
def test_a_malformed_labels_json_is_a_model_error_naming_the_file_and_the_problem(saved_model, tmp_path, labels,
                                                                                  expected):
    (tmp_path / "model.keras").write_bytes((saved_model / "model.keras").read_bytes())
    (tmp_path / "labels.json").write_text(labels)
    message = model_error(tmp_path)
    assert message.startswith(str(tmp_path / "labels.json")) and expected in message


def test_a_corrupt_model_file_is_reported_as_corrupt_not_as_missing(saved_model, tmp_path):
    (tmp_path / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    (tmp_path / "model.keras").write_bytes((saved_model / "model.keras").read_bytes()[:5000])  # a cut-off copy
    message = model_error(tmp_path)
    assert message.startswith(f"{tmp_path / 'model.keras'} is corrupt or unreadable: it is not a .keras (zip) archive")
    assert "File not found" not in message


def write_keras_zip(path: Path, members: dict[str, int], source: Path) -> Path:
    """A .keras archive: the real model's members, plus ``members`` as runs of zeros of the given sizes."""
    import zipfile

    with zipfile.ZipFile(source) as real, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in real.namelist():
            if name not in members:
                archive.writestr(name, real.read(name))
        for name, size in members.items():
            with archive.open(name, "w", force_zip64=True) as handle:
                block = bytes(1 << 20)
                for _ in range(size >> 20):
                    handle.write(block)
    return path


@pytest.mark.parametrize(("members", "expected"), [
    ({"config.json": 65 << 20}, "its config.json unpacks to 68157440 bytes, more than the 67108864"),
    ({"model.weights.h5": 200 << 20}, "is refused as a zip bomb: its model.weights.h5 unpacks to 209715200 bytes"),
    ({"padding.bin": 100 << 20}, "is refused as a zip bomb: its padding.bin"),
], ids=["huge_config", "zero_weights", "extra_member"])
def test_a_keras_zip_bomb_is_refused_before_keras_unpacks_it(saved_model, tmp_path, members, expected):
    write_keras_zip(tmp_path / "model.keras", members, saved_model / "model.keras")
    assert (tmp_path / "model.keras").stat().st_size < 2_000_000  # kilobytes on disk
    (tmp_path / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    assert expected in model_error(tmp_path)
