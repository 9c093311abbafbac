"""``predict --runtime litert``: the run's model converted once to TensorFlow Lite, kept and checked.

The first LiteRT run converts ``model.keras`` (the same converter as ``ecoclassify export``,
float32, any batch size) and, before keeping the result, runs both runtimes on a few of the
images about to be labelled: when a top-1 class differs, or a probability by more than
:data:`TOLERANCE`, it refuses instead of labelling with a model that is not the trained one.
What passed is kept beside the model::

    RUN/model.litert.tflite   the converted model
    RUN/model.litert.json     the SHA-256 of the model.keras it came from and of itself,
                              converter versions, and the agreement check's numbers

both written atomically, the record last. Later runs reuse the file while the model's SHA-256
matches the record; a changed model (stale file), a file whose SHA-256 does not match the
record (corrupt) or one LiteRT cannot load is converted and checked again, with a warning
saying why: a LiteRT file is never used without a passed check on record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ecoclassify.errors import ModelError, RunError
from ecoclassify.files import LITERT_FILE, LITERT_RECORD, MODEL_FILE, atomic_write, file_sha256, write_json
from ecoclassify.models.runtimes import KerasRuntime, LiteRTRuntime, litert_version, require_litert

log = logging.getLogger(__name__)

#: Largest |LiteRT - Keras| allowed on any class probability (float32 arithmetic in both).
TOLERANCE = 1e-4
#: Images the agreement check compares the runtimes on.
CHECK_IMAGES = 8
_RECORD_VERSION = 1

#: Gives the agreement check's images: ``(images, where they came from)``; images is
#: ``(n, height, width, 3)`` uint8, or None when none could be read (a synthetic batch is used).
SampleImages = Callable[[], "tuple[np.ndarray | None, str]"]


def litert_paths(model_path: Path) -> tuple[Path, Path]:
    """``(converted file, its record)`` beside a ``.keras`` file: ``model.litert.tflite``/``.json`` in a run."""
    model_path = Path(model_path)
    if model_path.name == MODEL_FILE:
        return model_path.with_name(LITERT_FILE), model_path.with_name(LITERT_RECORD)
    stem = model_path.name[: -len(model_path.suffix)] if model_path.suffix else model_path.name
    return model_path.with_name(f"{stem}.litert.tflite"), model_path.with_name(f"{stem}.litert.json")


def prepare_litert(classifier: Any, batch_size: int, threads: int | None, sample: SampleImages) -> LiteRTRuntime:
    """The LiteRT runtime of a loaded classifier: the kept file, or a new conversion that passed the check.

    Args:
        classifier: A :class:`~ecoclassify.models.io.LoadedClassifier` (its Keras model is the reference).
        batch_size: Images per call, as ``predict``'s.
        threads: Interpreter threads, as ``predict``'s decoding threads (None: the number of CPUs).
        sample: Called only when converting: the images to check agreement on.

    Returns:
        The runtime, with ``path`` and ``sha256`` set to the kept file (for Dask workers).

    Raises:
        ConfigError: ``ai-edge-litert`` is not installed.
        ModelError: The model cannot be converted (naming the operation and layer), or the
            converted model does not agree with Keras.
        RunError: The converted file cannot be written beside the model.
    """
    require_litert()
    tflite, record_path = litert_paths(classifier.path)
    source_sha256 = file_sha256(classifier.path)
    record, reason = _kept_record(tflite, record_path, source_sha256, classifier.path.name)
    if record is not None:
        try:
            runtime = LiteRTRuntime(model_path=tflite, batch_size=batch_size, threads=threads)
        except ModelError as exc:
            reason = f"LiteRT cannot load it ({exc})"
        else:
            runtime.sha256 = record["tflite_sha256"]
            log.debug("using %s (converted from %s, agreement checked)", tflite, classifier.path.name)
            return runtime
    if reason:
        log.warning("%s is not used: %s. Converting %s again (checked against Keras before use).", tflite, reason,
                    classifier.path.name)
    else:
        log.info("converting %s for LiteRT (once; kept as %s)", classifier.path.name, tflite.name)
    return _convert_and_keep(classifier, tflite, record_path, source_sha256, batch_size, threads, sample)


def open_litert(path: Path, sha256: str, batch_size: int, threads: int | None) -> LiteRTRuntime:
    """Open a file :func:`prepare_litert` kept, refusing it if it changed since (on Dask workers).

    Raises:
        ModelError: The file is missing or its SHA-256 is not ``sha256``.
    """
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"cannot read the LiteRT model {path}: {exc.strerror or exc}") from None
    if actual != sha256:
        raise ModelError(f"the LiteRT model {path} changed after it was checked against Keras (SHA-256 {actual[:12]}, "
                         f"expected {sha256[:12]}); run predict again to convert and check it anew")
    runtime = LiteRTRuntime(model_path=path, batch_size=batch_size, threads=threads)
    runtime.sha256 = sha256
    return runtime


def _kept_record(tflite: Path, record_path: Path, source_sha256: str,
                 source_name: str) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` when the kept file may be used, else ``(None, why not)``; ``""`` when there is none."""
    if not tflite.exists() and not record_path.exists():
        return None, ""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        recorded_source, recorded_self = record["source_sha256"], record["tflite_sha256"]
        passed = record["agreement"]["passed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"its record {record_path.name} is missing or unreadable ({type(exc).__name__}: {exc})"
    if recorded_source != source_sha256:
        return None, f"it is stale: {source_name} changed since it was converted"
    try:
        actual = file_sha256(tflite)
    except OSError as exc:
        return None, f"it cannot be read ({exc.strerror or exc})"
    if actual != recorded_self:
        return None, f"it is corrupt: its SHA-256 does not match the one {record_path.name} recorded when it was made"
    if passed is not True:
        return None, "its agreement check with Keras did not pass"
    return record, ""


def _convert_and_keep(classifier: Any, tflite: Path, record_path: Path, source_sha256: str, batch_size: int,
                      threads: int | None, sample: SampleImages) -> LiteRTRuntime:
    from ecoclassify.models.conversion import convert_tflite

    try:
        flatbuffer = convert_tflite(classifier.model, None, None, batch=None)
    except ModelError as exc:
        raise ModelError(f"{classifier.path} cannot run on LiteRT: {exc}. Use --runtime keras (runtime='keras') "
                         "to label with this model.") from None
    runtime = LiteRTRuntime(model_content=flatbuffer, batch_size=batch_size, threads=threads)
    images, origin = sample()
    if images is None or not len(images):
        images, origin = synthetic_images(classifier.image_size), "synthetic"
    agreement = check_agreement(KerasRuntime(classifier.model), runtime, images[:CHECK_IMAGES], batch_size)
    agreement["images_from"] = origin
    if not agreement["passed"]:
        raise ModelError(
            f"the LiteRT conversion of {classifier.path} does not give Keras' results on {agreement['images']} "
            f"{origin} images: top-1 differs on {agreement['images'] - agreement['top1_agree']}, largest probability "
            f"difference {agreement['max_abs_diff']:.2g} (allowed {TOLERANCE:g}). It is not used; label with "
            "--runtime keras (runtime='keras').")
    record = {
        "version": _RECORD_VERSION,
        "source": classifier.path.name,
        "source_sha256": source_sha256,
        "tflite_sha256": hashlib.sha256(flatbuffer).hexdigest(),
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "converter": _versions(),
        "xnnpack": runtime.xnnpack,
        "agreement": agreement,
    }
    try:
        atomic_write(tflite, lambda tmp: tmp.write_bytes(flatbuffer))
        write_json(record_path, record)  # last: a file without its record is never used
    except OSError as exc:
        raise RunError(f"cannot keep the LiteRT model {tflite} beside {classifier.path.name}: "
                       f"{exc.strerror or exc}. Copy the run folder somewhere writable, or use --runtime keras."
                       ) from None
    log.info("LiteRT agrees with Keras on %d %s images (largest probability difference %.2g); kept %s",
             agreement["images"], origin, agreement["max_abs_diff"], tflite)
    runtime.path, runtime.sha256 = tflite, record["tflite_sha256"]
    return runtime


def check_agreement(reference: Any, candidate: Any, images: np.ndarray, batch_size: int,
                    tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Run both runtimes on ``images`` in zero-padded batches of ``batch_size``, as ``predict`` does.

    Returns:
        ``images``, ``batch_size``, ``tolerance``, ``max_abs_diff`` (largest |Δp| over all
        classes and images), ``top1_agree`` (images whose top-1 class is the same) and ``passed``
        (every top-1 the same and ``max_abs_diff <= tolerance``).
    """
    expected, actual = [], []
    for first in range(0, len(images), batch_size):
        part = images[first:first + batch_size]
        batch = np.zeros((batch_size, *images.shape[1:]), dtype=np.uint8)
        batch[: len(part)] = part
        expected.append(reference.predict_batch(batch)[: len(part)])
        actual.append(candidate.predict_batch(batch)[: len(part)])
    keras_probs, litert_probs = np.concatenate(expected), np.concatenate(actual)
    max_diff = float(np.max(np.abs(keras_probs.astype(np.float64) - litert_probs)))
    top1 = int(np.sum(np.argmax(keras_probs, axis=1) == np.argmax(litert_probs, axis=1)))
    return {"images": len(images), "batch_size": batch_size, "tolerance": tolerance, "max_abs_diff": max_diff,
            "top1_agree": top1, "passed": top1 == len(images) and max_diff <= tolerance}


def synthetic_images(image_size: tuple[int, int], count: int = CHECK_IMAGES) -> np.ndarray:
    """A fixed batch of smooth random images (seeded), for a check without readable inputs."""
    height, width = image_size
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.float64)
    rows = np.linspace(0, 3, height)
    cols = np.linspace(0, 3, width)
    # Bilinear upsampling of a 4x4 grid: image-like gradients, not white noise.
    r0, c0 = np.floor(rows).astype(int).clip(0, 2), np.floor(cols).astype(int).clip(0, 2)
    fr, fc = (rows - r0)[None, :, None, None], (cols - c0)[None, None, :, None]
    top = coarse[:, r0][:, :, c0] * (1 - fc) + coarse[:, r0][:, :, c0 + 1] * fc
    bottom = coarse[:, r0 + 1][:, :, c0] * (1 - fc) + coarse[:, r0 + 1][:, :, c0 + 1] * fc
    return np.clip(top * (1 - fr) + bottom * fr, 0, 255).astype(np.uint8)


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from ecoclassify import __version__

    return {"ecoclassify": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "ai-edge-litert": litert_version()}
