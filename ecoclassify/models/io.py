"""Loading a trained classifier (run folder or ``.keras`` file with its ``labels.json``) safely.

Predict and evaluate both start here, so they read models exactly the same way.
Models are loaded with ``safe_mode=True``: a file that would run arbitrary code on load
(Lambda layers, pickled functions) is refused.
"""

from __future__ import annotations

import json
import zipfile
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


#: Caps checked on a ``.keras`` archive before Keras unpacks it, so a zip bomb is refused
#: instead of filling memory or disk. A real ``config.json`` is kilobytes to a few megabytes;
#: real weights hardly compress (float32 noise), so a large member that shrank more than
#: ``MAX_COMPRESSION_RATIO`` times is a run of repeated bytes, not weights.
MAX_JSON_MEMBER_BYTES = 64 * 2**20
MAX_ARCHIVE_BYTES = 8 * 2**30
MAX_COMPRESSION_RATIO = 100


def check_keras_archive(model_path: Path) -> None:
    """Refuse a ``.keras`` file that is not a zip archive, lacks ``config.json`` or is a zip bomb.

    Raises:
        ModelError: Naming the file and what is wrong with it.
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"{model_path} is corrupt or unreadable: it is not a .keras (zip) archive "
                         f"({type(exc).__name__}: {exc})") from None
    if "config.json" not in {m.filename for m in members}:
        raise ModelError(f"{model_path} is corrupt: the archive has no config.json, so it is not a Keras model")
    total = 0
    for member in members:
        total += member.file_size
        if member.filename.endswith(".json") and member.file_size > MAX_JSON_MEMBER_BYTES:
            raise ModelError(f"{model_path} is refused: its {member.filename} unpacks to {member.file_size} bytes, "
                             f"more than the {MAX_JSON_MEMBER_BYTES} a model description can need")
        if member.file_size > MAX_JSON_MEMBER_BYTES and member.file_size > MAX_COMPRESSION_RATIO * member.compress_size:
            raise ModelError(f"{model_path} is refused as a zip bomb: its {member.filename} unpacks to "
                             f"{member.file_size} bytes from {member.compress_size} (more than "
                             f"{MAX_COMPRESSION_RATIO}x), which real weights never do")
    if total > MAX_ARCHIVE_BYTES:
        raise ModelError(f"{model_path} is refused: it unpacks to {total} bytes, more than {MAX_ARCHIVE_BYTES}")


def read_classes(labels_path: Path) -> list[str]:
    """The class names of a ``labels.json``: a non-empty list of distinct, non-empty strings.

    Raises:
        ModelError: Naming the file and what is wrong, with what was received.
    """
    form = '{"classes": ["name", ...]}'
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{labels_path} is not a valid labels file ({form}): {exc}") from None
    if not isinstance(labels, dict) or "classes" not in labels:
        raise ModelError(f"{labels_path} must be an object with a list 'classes' ({form}). "
                         f"Received: {json.dumps(labels)[:100]}")
    classes = labels["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ModelError(f"{labels_path}: 'classes' must be a non-empty list of class names (strings) in the "
                         f"model's output order. Received: classes={json.dumps(classes)[:100]}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ModelError(f"{labels_path}: 'classes' must not repeat a name, or two outputs would mean the same "
                         f"class. Received repeated: {', '.join(repeated)}")
    return list(classes)


def load_classifier(source: Path | str) -> LoadedClassifier:
    """Load a classifier from a run folder or a ``.keras`` file with ``labels.json`` beside it.

    Raises:
        ModelError: The files are missing, corrupt, unsafe (see :func:`check_keras_archive`) or
            inconsistent (labels vs. model outputs).
    """
    # Every check that needs no TensorFlow comes first: a wrong path fails in a second.
    model_path, labels_path = resolve_model_path(source)
    classes = read_classes(labels_path)
    check_keras_archive(model_path)
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
