"""Export a trained classifier for field devices and other runtimes: SavedModel or TensorFlow Lite.

The exported graph is the *inference* graph of the run's ``model.keras``: augmentation and
dropout inactive, BatchNorm on its moving statistics; preprocessing stays inside, so it takes
raw ``uint8`` RGB pixels of the model's size exactly like the Keras model and returns float32
class probabilities. Every export is a folder::

    OUT/model.tflite  (or OUT/saved_model/)
    OUT/labels.json   classes in output order, input/output description, source and versions
    OUT/labels.txt    one class per line, the form most TFLite runtimes and apps read

or, for ``tflite`` given a file name, ``NAME.tflite`` with ``NAME.labels.json`` and
``NAME.labels.txt`` beside it.

``int8`` quantisation calibrates activations on up to :data:`REPRESENTATIVE_IMAGES` images of
the run's training split (``splits.csv``), decoded by the same loader as training. The folder
is written under a temporary name and renamed into place, so a failed export never leaves a
half-written model where a device script would pick it up.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.files import (
    CONFIG_FILE, EXPORT_DIR, LABELS_FILE, LABELS_TXT, MODEL_FILE, SAVED_MODEL_DIR, SPLITS_FILE, STATE_FILE, TFLITE_FILE,
    atomic_write, usual_permissions, write_json, write_text,
)
# The conversion itself lives in models/, where predict's LiteRT runtime uses it too.
from ecoclassify.models.conversion import INPUT_NAME, OUTPUT_NAME
from ecoclassify.models.conversion import convert_tflite as _convert_tflite
from ecoclassify.models.conversion import write_saved_model as _write_saved_model

log = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = ("float16", "int8")
#: Most training images used to calibrate ``int8`` activations.
REPRESENTATIVE_IMAGES = 100
#: Suffixes of other single-file formats: a mistaken ``-o`` for the chosen format.
FILE_SUFFIXES = frozenset({".keras", ".h5", ".hdf5", ".pb", ".onnx", ".lite", ".pt", ".pth", ".zip", ".json", ".txt",
                           ".csv", ".yaml", ".yml"})


def default_output(run_dir: Path | str, fmt: str, quantize: Optional[str] = None) -> Path:
    """``RUN_DIR/export/<format>[-<quantize>]``, e.g. ``runs/x/export/tflite-int8``."""
    run_dir = Path(run_dir)
    base = run_dir if run_dir.is_dir() else run_dir.parent  # a .keras file: its folder
    return base / EXPORT_DIR / (fmt if quantize is None else f"{fmt}-{quantize}")


def _check_arguments(fmt: str, quantize: Optional[str], output: Path) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of: {', '.join(FORMATS)}. Received: format={fmt!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"quantize must be one of: {', '.join(QUANTIZATIONS)} (or none). Received: quantize={quantize!r}")
    if quantize is not None and fmt != "tflite":
        raise ConfigError(f"quantize applies to format 'tflite' only: a SavedModel keeps float32 weights. "
                          f"Received: format={fmt!r}, quantize={quantize!r}")
    suffix = output.suffix.lower()
    if fmt == "saved_model" and (suffix == ".tflite" or suffix in FILE_SUFFIXES):
        raise ConfigError(f"format 'saved_model' writes a folder (holding {SAVED_MODEL_DIR}/ and the labels files); "
                          f"give a folder name, or use format 'tflite' for a .tflite file. Received: output='{output}'")
    if fmt == "tflite" and suffix in FILE_SUFFIXES:
        raise ConfigError(f"format 'tflite' writes a .tflite file (e.g. model.tflite, with NAME.labels.json and "
                          f"NAME.labels.txt beside it) or a folder; {suffix} is not a TensorFlow Lite file. "
                          f"Received: output='{output}'")


def single_file_outputs(output: Path) -> dict[str, Path]:
    """For ``-o NAME.tflite``: the model file and its labels files beside it, by role.

    The labels files are named after the model (``NAME.labels.json``, ``NAME.labels.txt``), so
    several exports can share a folder and none replaces a run's own ``labels.json``.
    """
    stem = output.name[: -len(output.suffix)]
    return {TFLITE_FILE: output, LABELS_FILE: output.with_name(f"{stem}.labels.json"),
            LABELS_TXT: output.with_name(f"{stem}.labels.txt")}


def _check_free_files(targets: dict[str, Path], overwrite: bool) -> None:
    for target in targets.values():
        if target.is_dir():
            raise RunError(f"{target} is a folder; the export writes a file there. Choose another output (-o)")
    taken = [str(target) for target in targets.values() if target.exists()]
    if taken and not overwrite:
        raise RunError(f"{', '.join(taken)} already exist(s); choose another output (-o), or replace them with "
                       "--overwrite (overwrite=True)")


def _check_free(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise RunError(f"the export output must be a folder, and '{output}' is a file")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise RunError(f"{output} already exists; choose another output folder (-o), or replace it with "
                       "--overwrite (overwrite=True)")


#: Files that make a folder a run folder: an export never replaces a folder holding one.
RUN_MARKERS = (MODEL_FILE, CONFIG_FILE, STATE_FILE, SPLITS_FILE)


def _refuse_run_folders(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that is, or holds, the exported run (or model) or any other run folder.

    ``--overwrite`` replaces the output folder as a whole, so ``-o RUN_DIR`` would delete the
    run's model, config and splits. Checked before anything is converted or deleted.
    """
    target = output.resolve()
    model = source.resolve()
    run_dir = model if model.is_dir() else model.parent
    if target == run_dir or run_dir.is_relative_to(target):
        raise RunError(f"the export output '{output}' is or contains the run folder '{run_dir}' being exported, which "
                       f"replacing it would delete. Choose another output folder (-o), e.g. the default "
                       f"'{default_output(source, 'FORMAT')}'")
    if not (overwrite and target.is_dir()):
        return  # nothing will be replaced (without overwrite, _check_free refuses a non-empty output)
    for folder, _, files in os.walk(target):
        found = sorted(set(files) & set(RUN_MARKERS))
        if found:
            raise RunError(f"the export output '{output}' holds a run folder ('{folder}' has {', '.join(found)}), "
                           "which replacing it would delete. Choose another output folder (-o)")


def representative_images(run_dir: Path, image_size: tuple[int, int],
                          limit: int = REPRESENTATIVE_IMAGES, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` training images of a run, as a ``(n, height, width, 3)`` uint8 array.

    Drawn at random (seeded) from the train split of ``splits.csv`` so every class is likely
    represented (the file is sorted by path, hence by class); unreadable files are skipped.

    Raises:
        DataError: The run has no ``splits.csv``, no train split, or none of its images can be read.
    """
    from ecoclassify.data.images import ImageReadError, load_rgb

    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        raise DataError(f"int8 quantisation calibrates on the run's training images, listed in {SPLITS_FILE}; "
                        f"{path} is missing (export from a run folder, or choose quantize float16)")
    splits = pd.read_csv(path, dtype=str, keep_default_na=False)
    train = splits[splits["split"] == "train"]
    if train.empty:
        raise DataError(f"{path} lists no train images to calibrate int8 quantisation on")
    chosen = train.sample(n=min(limit, len(train)), random_state=seed)["filepath"]
    images, failures = [], []
    for filepath in chosen:
        try:
            images.append(load_rgb(filepath, size=image_size).array)
        except ImageReadError as exc:
            failures.append(f"{filepath} ({exc.reason})")
    if failures:
        log.warning("%d calibration image(s) could not be read and were skipped, e.g. %s", len(failures), failures[0])
    if not images:
        raise DataError(f"none of the {len(chosen)} training images listed in {path} can be read "
                        "(moved or deleted since training?); int8 quantisation needs them for calibration")
    return np.stack(images)


def _labels(classifier: Any, fmt: str, quantize: Optional[str], batch: Optional[int],
            calibration_images: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from ecoclassify import __version__

    height, width = classifier.image_size
    return {
        "classes": classifier.classes,
        "image_size": [height, width],
        "format": fmt,
        "quantize": quantize,
        "calibration_images": calibration_images,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [batch, height, width, 3],
                  "description": "RGB pixels 0..255, resized to image_size; no other preprocessing"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [batch, len(classifier.classes)],
                   "description": "class probabilities in the order of classes"},
        "source": str(classifier.path),
        "versions": {"ecoclassify": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename the finished ``staging`` folder to ``output``, replacing an existing one last-moment."""
    if output.is_dir() and any(output.iterdir()):
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(output, old)
        try:
            os.replace(staging, output)
        except BaseException:
            os.replace(old, output)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        if output.is_dir():
            output.rmdir()  # an empty folder: renaming over it is not portable
        os.replace(staging, output)


def export(run_dir: Path | str, fmt: str, quantize: Optional[str] = None, output: Path | str | None = None,
           *, overwrite: bool = False) -> Path:
    """Export a run's model as a SavedModel or a TensorFlow Lite file, with its labels beside it.

    Args:
        run_dir: A run folder (or a ``.keras`` file with ``labels.json`` beside it; ``int8``
            then needs ``splits.csv`` beside it too).
        fmt: ``saved_model`` or ``tflite``.
        quantize: For ``tflite``: ``None`` (float32), ``float16`` (half-size weights) or ``int8``
            (quarter-size, integer arithmetic; calibrated on training images).
        output: The folder to create (default :func:`default_output`), or for ``tflite`` a file
            ``NAME.tflite``, written with ``NAME.labels.json`` and ``NAME.labels.txt`` beside it.
        overwrite: Replace an existing, non-empty output folder (or existing output files).

    Returns:
        The exported model: ``OUT/model.tflite`` (or the ``NAME.tflite`` given) or the
        SavedModel folder ``OUT/saved_model``.

    Raises:
        ConfigError: Unknown format or quantisation, quantisation asked for a SavedModel, or an
            output name that does not fit the format (``x.tflite`` for a SavedModel, ``x.onnx``...).
        RunError: The output exists (without ``overwrite``), is a file where a folder goes, or is
            or holds a run folder (the exported one or another), whatever ``overwrite`` says.
        ModelError: The model cannot be loaded or converted.
        DataError: ``int8`` without readable training images to calibrate on.
    """
    from ecoclassify.models.io import load_classifier

    output = Path(output) if output is not None else default_output(run_dir, fmt, quantize)
    _check_arguments(fmt, quantize, output)
    _refuse_run_folders(output, Path(run_dir), overwrite)
    files = single_file_outputs(output) if fmt == "tflite" and output.suffix.lower() == ".tflite" else None
    if files is None:
        _check_free(output, overwrite)
    else:
        _check_free_files(files, overwrite)
    classifier = load_classifier(run_dir)
    calibration = None
    if quantize == "int8":
        calibration = representative_images(classifier.path.parent, classifier.image_size)
        log.info("calibrating int8 quantisation on %d training images", len(calibration))

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        if fmt == "saved_model":
            batch = None
            _write_saved_model(classifier.model, staging / SAVED_MODEL_DIR, batch=None)
        else:
            batch = 1
            flatbuffer = _convert_tflite(classifier.model, quantize, calibration)
            atomic_write(staging / TFLITE_FILE, lambda tmp: tmp.write_bytes(flatbuffer))
        write_json(staging / LABELS_FILE, _labels(classifier, fmt, quantize, batch,
                                                       0 if calibration is None else len(calibration)))
        write_text(staging / LABELS_TXT, "".join(f"{name}\n" for name in classifier.classes))
        usual_permissions(staging)
        if files is None:
            _check_free(output, overwrite)  # someone may have written there while we converted
            _move_into_place(staging, output)
        else:
            _check_free_files(files, overwrite)
            # Each file is renamed into place (atomic); the model last, so it never lacks its labels.
            for role in (LABELS_FILE, LABELS_TXT, TFLITE_FILE):
                os.replace(staging / role, files[role])
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if files is not None:
        return output
    model_path = output / (SAVED_MODEL_DIR if fmt == "saved_model" else TFLITE_FILE)
    log.debug("exported %s%s to %s", fmt, f" ({quantize})" if quantize else "", model_path)
    return model_path
