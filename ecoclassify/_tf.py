"""Import TensorFlow without its start-up noise, keeping every real error.

On a CPU laptop TensorFlow prints CUDA probing lines ("Could not find cuda drivers",
"failed call to cuInit", CPU instruction notes) straight to file descriptor 2, before its
own log settings apply, so ``TF_CPP_MIN_LOG_LEVEL`` alone cannot hide them. During the import
and the device probe we capture descriptor 2, drop the lines known to be noise and print
everything else, so a genuine error still reaches the user.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

NOISE = re.compile(
    r"cudart_stub\.cc|cuda_platform\.cc.*cuInit|cpu_feature_guard\.cc|All log messages before absl::InitializeLog"
    r"|rebuild TensorFlow with the appropriate compiler flags|oneDNN custom operations are on"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning|cuda_executor\.cc.*NUMA|Could not find TensorRT"
    r"|fully_quantize: \d+, inference_type: \d+"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU"
)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Capture file descriptor 2 for the block and print back only lines that are not known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if line.strip() and not NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with start-up noise filtered out (idempotent)."""
    if "tensorflow" in sys.modules or os.environ.get("ECOCLASSIFY_TF_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing prints here on machines without a GPU
        tf.constant(0)  # first op: device initialisation messages
