"""The one model call of ``predict``, behind a small interface that each inference runtime implements.

``predict`` hands the model a ``uint8`` batch of ``(batch_size, height, width, 3)`` pixels and
reads back ``float32`` class probabilities; nothing else about the model is used while
labelling. :class:`KerasRuntime` is the loaded Keras model itself (the default);
:class:`LiteRTRuntime` runs the same model converted to TensorFlow Lite through the LiteRT
interpreter (``pip install 'ecoclassify[litert]'``), which costs less CPU per image.
Converting, caching and checking the LiteRT file is :mod:`ecoclassify.models.litert`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecoclassify._tf import quiet_stderr
from ecoclassify.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: The distribution that provides LiteRT, and how to install it with ecoclassify.
LITERT_PACKAGE = "ai-edge-litert"
LITERT_INSTALL = "pip install 'ecoclassify[litert]'"


class InferenceRuntime(Protocol):
    """What ``predict`` needs from a model: one batch of pixels in, probabilities out."""

    name: str

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(n, classes)`` float32, for a ``(n, height, width, 3)`` uint8 batch."""
        ...


class KerasRuntime:
    """The loaded Keras model (``predict_on_batch``: one traced shape per batch size)."""

    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of ``batch`` as float32."""
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)


def require_litert() -> None:
    """Check that LiteRT can be imported, without importing TensorFlow (a fast failure).

    Raises:
        ConfigError: ``ai-edge-litert`` is not installed, naming the package and the install command.
    """
    try:
        from ai_edge_litert import interpreter  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"runtime 'litert' needs the package {LITERT_PACKAGE}, which is not installed "
                          f"({exc}): {LITERT_INSTALL}, or use --runtime keras (runtime='keras'). "
                          "Received: runtime='litert'") from None


def litert_version() -> str:
    """The installed ``ai-edge-litert`` version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(LITERT_PACKAGE)
    except PackageNotFoundError:  # importable but not installed as a distribution (a source build)
        return "unknown"


class LiteRTRuntime:
    """A TensorFlow Lite model run by the LiteRT interpreter with XNNPACK, at one batch size.

    XNNPACK is LiteRT's default CPU delegate; :attr:`xnnpack` says whether it took over the
    graph (it does for every op ecoclassify's models use). The input is resized once to
    ``batch_size``: ``predict`` pads every batch to that size, so the interpreter never
    reallocates.

    Args:
        model_path: The ``.tflite`` file (or give ``model_content``).
        model_content: The flatbuffer's bytes.
        batch_size: Images per call.
        threads: Interpreter threads (None: the number of CPUs), as ``predict``'s ``threads``.

    Raises:
        ModelError: The file is not a TensorFlow Lite model this interpreter can run.
    """

    name = "litert"

    def __init__(self, *, model_path: Path | None = None, model_content: bytes | None = None, batch_size: int,
                 threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = None if model_path is None else Path(model_path)
        self.sha256: str | None = None  # of the kept file, set by ecoclassify.models.litert
        self.batch_size = batch_size
        self.threads = threads or os.cpu_count() or 1
        where = self.path or "the converted model"
        try:
            # The interpreter prints "Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2.
            with quiet_stderr():
                self.interpreter = Interpreter(model_path=None if self.path is None else str(self.path),
                                               model_content=model_content, num_threads=self.threads)
                self._input = self.interpreter.get_input_details()[0]
                self._output = self.interpreter.get_output_details()[0]
                self.interpreter.resize_tensor_input(self._input["index"], [batch_size, *self._input["shape"][1:]],
                                                     strict=True)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, IndexError, OSError) as exc:
            raise ModelError(f"LiteRT cannot load {where}: {str(exc).splitlines()[0][:300] if str(exc) else exc!r}"
                             ) from None
        if self._input["dtype"] != np.uint8 or len(self._input["shape"]) != 4:
            raise ModelError(f"{where} does not take uint8 images (input {self._input['dtype'].__name__} "
                             f"{list(self._input['shape'])}); convert it from the run's model.keras")
        self.image_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.xnnpack = _delegated(self.interpreter)
        if not self.xnnpack:
            log.warning("LiteRT did not apply its XNNPACK delegate to %s: it runs on reference kernels, which "
                        "are slower than Keras", where)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of ``batch`` (``batch_size`` images) as float32."""
        if batch.shape[0] != self.batch_size:
            raise ValueError(f"the LiteRT runtime was sized for batches of {self.batch_size}; "
                             f"received {batch.shape[0]} images")
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(batch, dtype=np.uint8))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output["index"]), dtype=np.float32)


def _delegated(interpreter: Any) -> bool:
    """Whether a delegate (XNNPACK, the only default one) replaced nodes of the graph."""
    try:
        ops = interpreter._get_ops_details()  # no public API tells; a delegated subgraph is a DELEGATE node
    except AttributeError:  # a LiteRT without it: assume the documented default
        return True
    return any(op.get("op_name") == "DELEGATE" for op in ops)
