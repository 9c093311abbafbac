"""A saved model is a plain Keras file: it loads and predicts where ecoclassify cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.prediction._predict_support import COLOURS, coloured, tiny_model_dir

from ecoclassify.data.images import load_rgb
from ecoclassify.models.layers import PREPROCESSING_MODES, preprocessing_block

# Run in an isolated Python (-I: no PYTHONPATH, no user site, no script folder on sys.path)
# with an import hook that refuses ecoclassify, so the model cannot lean on it even if the
# package is installed.
FOREIGN_SCRIPT = r'''
import importlib.abc, json, sys

class RefuseEcoclassify(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ecoclassify" or name.startswith("ecoclassify."):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, RefuseEcoclassify())
try:
    import ecoclassify
except ImportError:
    pass
else:
    raise SystemExit("ecoclassify could be imported")

import keras
import numpy as np

jobs = json.loads(sys.argv[1])
for model_path, images_path, out_path in jobs:
    model = keras.saving.load_model(model_path, safe_mode=True)
    np.save(out_path, model.predict(np.load(images_path), verbose=0))
print("no ecoclassify module loaded:", not any(m.startswith("ecoclassify") for m in sys.modules))
'''


def run_without_ecoclassify(jobs: list[tuple[Path, Path, Path]], cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    arguments = json.dumps([[str(p) for p in job] for job in jobs])
    return subprocess.run([sys.executable, "-I", "-c", FOREIGN_SCRIPT, arguments], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})


def real_jpegs(folder: Path, shared: Path) -> list[Path]:
    """JPEGs written here, plus real camera-trap photos when ../shared is present."""
    paths = [coloured(folder / f"{label}_{seed}.jpg", label, seed=seed, quality=90)
             for seed in range(2) for label in COLOURS]
    photos = shared / "data" / "camera-traps" / "zamba-ena24" / "images"
    if photos.is_dir():
        paths += sorted(photos.rglob("*.jpg"))[:4]
    return paths


def test_a_saved_model_loads_and_predicts_the_same_in_a_python_without_ecoclassify(tmp_path_factory, tmp_path):
    model_dir = tiny_model_dir(tmp_path_factory)
    shared = Path(__file__).resolve().parents[2] / "shared"
    batch = np.stack([load_rgb(path, size=(32, 32)).array for path in real_jpegs(tmp_path / "jpegs", shared)])
    np.save(tmp_path / "images.npy", batch)
    jobs = [(model_dir / "model.keras", tmp_path / "images.npy", tmp_path / "trained.npy")]
    expected = {"trained": keras.saving.load_model(model_dir / "model.keras", safe_mode=True).predict(batch, verbose=0)}
    # Every preprocessing mode's block, in a model that shows its numbers (no pooling away of channel order).
    for mode in PREPROCESSING_MODES:
        inputs = keras.Input((32, 32, 3), dtype="uint8")
        x = preprocessing_block(mode)(keras.layers.Rescaling(1.0, name="to_float")(inputs))
        model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        model.save(tmp_path / f"{mode}.keras")
        expected[mode] = model.predict(batch, verbose=0)
        jobs.append((tmp_path / f"{mode}.keras", tmp_path / "images.npy", tmp_path / f"{mode}.npy"))

    result = run_without_ecoclassify(jobs, cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "no ecoclassify module loaded: True" in result.stdout
    for name, values in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), values, rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.allclose(np.load(tmp_path / "trained.npy").sum(axis=1), 1.0, atol=1e-5)


def test_the_foreign_python_really_cannot_load_a_model_that_needs_ecoclassify(tmp_path):
    # The guard of the test above: an old-style model with the custom layer fails there.
    from ecoclassify.models.layers import BackbonePreprocessing

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = BackbonePreprocessing("caffe")(keras.layers.Rescaling(1.0)(inputs))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(tmp_path / "old.keras")
    np.save(tmp_path / "images.npy", np.zeros((1, 32, 32, 3), np.uint8))
    job = (tmp_path / "old.keras", tmp_path / "images.npy", tmp_path / "out.npy")
    result = run_without_ecoclassify([job], tmp_path)
    assert result.returncode != 0 and "BackbonePreprocessing" in result.stderr


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_the_preprocessing_constants_never_train(mode):
    block = preprocessing_block(mode)
    block.trainable = True  # what the freezing policy does to every layer outside the backbone
    assert block.trainable_weights == []
