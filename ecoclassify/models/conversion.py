"""Converting a trained classifier's inference graph: a SavedModel endpoint and TensorFlow Lite.

``ecoclassify export`` writes these files for other runtimes, and ``predict --runtime litert``
converts the run's model once for the LiteRT interpreter; both use this one converter, so
the file predict checks against Keras is the file export would write.

The converted graph is the *inference* graph of the Keras model: augmentation and dropout
inactive, BatchNorm on its moving statistics; preprocessing stays inside, so it takes raw
``uint8`` RGB pixels of the model's size and returns float32 class probabilities.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ecoclassify.errors import ModelError
from ecoclassify.files import SAVED_MODEL_DIR

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def write_saved_model(model: Any, folder: Path, batch: Optional[int]) -> None:
    """The inference endpoint as a SavedModel: ``serving_default(image: uint8) -> {probabilities}``."""
    import keras
    import tensorflow as tf

    height, width = model.inputs[0].shape[1:3]

    def serve(image: Any) -> dict[str, Any]:
        # training=False is what makes this the inference graph: augmentation and dropout
        # pass through, BatchNorm uses its moving statistics.
        return {OUTPUT_NAME: model(image, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([batch, height, width, 3], tf.uint8, name=INPUT_NAME)])
    # TensorFlow logs "Assets written to <folder>" at INFO, naming a temporary folder the user never sees.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(max(level, logging.WARNING))
    try:
        archive.write_out(str(folder), verbose=False)
    finally:
        tf_logger.setLevel(level)


def convert_tflite(model: Any, quantize: Optional[str], calibration: Optional[np.ndarray],
                   batch: Optional[int] = 1) -> bytes:
    """TFLite flatbuffer of the inference graph, converted from a SavedModel.

    Args:
        model: The end-to-end Keras model.
        quantize: None (float32), ``float16`` or ``int8``.
        calibration: For ``int8``: ``(n, height, width, 3)`` uint8 images.
        batch: The input's batch size; 1 (what field devices run, and what delegates such as
            the Edge TPU compiler require; the interpreter can still resize it) or None (any
            batch size, resized by the interpreter without rewriting baked-in shapes).

    Raises:
        ModelError: The converter failed; for operations TensorFlow Lite lacks, the message
            names them and the layers they come from.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="ecoclassify-export-") as scratch:
        write_saved_model(model, Path(scratch) / SAVED_MODEL_DIR, batch=batch)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(scratch) / SAVED_MODEL_DIR))
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if calibration is None:
                raise ValueError("int8 quantisation needs calibration images")
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
            # Full integer: every op in int8 (no float fallback), as int8-only accelerators need.
            # The uint8 input is cast and quantised inside; probabilities come out as float32.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
            unsupported = unsupported_operations(str(exc), [layer.name for layer in _all_layers(model)])
            if unsupported:
                raise ModelError(f"TensorFlow Lite conversion ({quantize or 'float32'}) failed: TensorFlow Lite "
                                 f"has no {unsupported}") from None
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ModelError(f"TensorFlow Lite conversion ({quantize or 'float32'}) failed: {reason[:300]}") from None


#: How the converter names an operation it cannot convert (``'tf.Erfinv' op is neither a
#: custom op nor a flex op``), and the graph location it was found at.
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_LOCATION = re.compile(r'"([^"\s]+/[^"\s]+)"')


def unsupported_operations(message: str, layer_names: list[str]) -> str:
    """``"operation Erfinv (layer 'noise')"``-like text for the ops a converter error lists; "" if none.

    The converter reports each op with its location in the traced graph, a path such as
    ``functional_1/noise_1/Erfinv``; its parts are matched against the model's layer names
    (Keras may append ``_1`` to them while tracing).
    """
    found: dict[str, set[str]] = {}
    for line in message.splitlines():
        op = _UNSUPPORTED_OP.search(line)
        if op is None:
            continue
        layers = found.setdefault(op.group(1), set())
        for location in _LOCATION.findall(line):
            for part in re.split(r"[/@:]", location):
                name = part if part in layer_names else re.sub(r"_\d+$", "", part)
                if name in layer_names:
                    layers.add(name)
    described = []
    for op, layers in sorted(found.items()):
        where = f" (layer {', '.join(repr(name) for name in sorted(layers))})" if layers else ""
        described.append(f"{op}{where}")
    if not described:
        return ""
    return f"operation{'s' if len(described) > 1 else ''} " + ", ".join(described)


def _all_layers(model: Any) -> list[Any]:
    """The model's layers and those of nested models (the backbone), depth first."""
    layers = []
    for layer in getattr(model, "layers", []):
        layers.append(layer)
        layers.extend(_all_layers(layer))
    return layers
