"""Loading a trained classifier (run folder or ``.keras`` file with its ``labels.json``) safely.

Predict and evaluate both start here, so they read models exactly the same way.
Models are loaded with ``safe_mode=True``: a file that would run arbitrary code on load
(Lambda layers, pickled functions) is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecoclassify._tf import quiet_tensorflow
from ecoclassify.errors import ModelError
from ecoclassify.files import LABELS_FILE, MODEL_FILE


@dataclass
class LoadedClassifier:
    """A trained model with what is needed to use it.

    Attributes:
        model: The end-to-end Keras model (uint8 images in, class probabilities out).
        classes: Class names in output order.
        image_size: ``(height, width)`` the model takes.
        path: The ``.keras`` file it came from.
    """

    model: Any
    classes: list[str]
    image_size: tuple[int, int]
    path: Path


def resolve_model_path(source: Path | str) -> tuple[Path, Path]:
    """``(model file, labels file)`` for a run folder or a ``.keras`` file.

    Raises:
        ModelError: Neither a run folder with ``model.keras`` nor a ``.keras`` file with a
            ``labels.json`` beside it.
    """
    source = Path(source)
    if source.is_dir():
        model_path, labels_path = source / MODEL_FILE, source / LABELS_FILE
    else:
        model_path, labels_path = source, source.parent / LABELS_FILE
    if not model_path.is_file() or model_path.suffix != ".keras":
        raise ModelError(f"model must be a run folder containing {MODEL_FILE} or a .keras file. Received: '{source}'")
    if not labels_path.is_file():
        raise ModelError(f"{labels_path} is missing: a model needs its labels.json (class names in output order) "
                         "beside it, as written in every run folder")
    return model_path, labels_path


def load_classifier(source: Path | str) -> LoadedClassifier:
    """Load a classifier from a run folder or a ``.keras`` file with ``labels.json`` beside it.

    Raises:
        ModelError: The files are missing, unsafe or inconsistent (labels vs. model outputs).
    """
    # Every check that needs no TensorFlow comes first: a wrong path fails in a second.
    model_path, labels_path = resolve_model_path(source)
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
        classes = [str(c) for c in labels["classes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{labels_path} is not a valid labels file ({{\"classes\": [...]}}): {exc}") from None
    quiet_tensorflow()
    import keras

    import ecoclassify.models.layers  # noqa: F401  (registers our serialisable layers)
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as exc:  # Keras raises many types for corrupt, foreign or unsafe files
        raise ModelError(f"cannot load the model {model_path}: {str(exc).splitlines()[0][:300]}") from None
    outputs = model.outputs[0].shape[-1]
    if outputs != len(classes):
        raise ModelError(f"{labels_path} lists {len(classes)} classes but the model has {outputs} outputs")
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ModelError(f"{model_path} does not take fixed-size images (input shape {tuple(shape)})")
    return LoadedClassifier(model, classes, (int(shape[1]), int(shape[2])), model_path)
