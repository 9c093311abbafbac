"""Checking input shapes and loading local weights files into backbones, with clear errors.

Shared by every builder (:mod:`ecoclassify.models.backbones`,
:mod:`ecoclassify.models.efficientnet_lite`): a missing file, a file of the wrong format or
one that fits only partly is a ``ModelError`` that names the file and says why.
"""

from __future__ import annotations

import re
import urllib.error
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ecoclassify.config.backbones import get_backbone
from ecoclassify.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import keras


def check_input_shape(backbone: str, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a tuple, or raise ``ModelError`` unless it is ``(h, w, 3)`` with
    both sides at least the backbone's ``min_size``."""
    spec = get_backbone(backbone)
    shape = tuple(input_shape)
    valid = (
        len(shape) == 3
        and all(isinstance(d, int) for d in shape)
        and shape[2] == 3
        and min(shape[:2]) >= spec.min_size
    )
    if not valid:
        raise ModelError(
            f"input_shape for backbone {backbone!r} must be (height, width, 3) with height and "
            f"width >= {spec.min_size}. Received: input_shape={tuple(input_shape)!r}"
        )
    return shape  # type: ignore[return-value]


def check_weights_path(path: str | Path, backbone: str, formats: tuple[str, ...]) -> Path:
    """Check that a weights file exists and has one of ``formats`` as suffix; return it ``~``-expanded.

    Called before building so that a typo fails fast. Raises ``ModelError`` naming the path.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model.weights for backbone {backbone!r} must be 'imagenet' (where available), null (random "
            f"initialisation) or the path of an existing weights file; no such file. Received: model.weights='{path}'"
        )
    if not path.name.endswith(tuple(formats)):
        raise ModelError(
            f"model.weights for backbone {backbone!r} must be a file ending in {', '.join(formats)}. "
            f"Received: model.weights='{path}'"
        )
    return path


def load_weights_file(model: "keras.Model", path: str | Path, backbone: str, formats: tuple[str, ...]) -> None:
    """Load a local weights file into ``model``, turning every failure into a ``ModelError``.

    Args:
        model: The freshly built backbone (random weights).
        path: Weights file; its suffix must be one of ``formats``.
        backbone: Backbone name, used in messages.
        formats: Accepted file suffixes, e.g. ``(".weights.h5", ".h5")``.

    Raises:
        ModelError: The file is missing, has an unsupported suffix or does not fit the model;
            the message names the path, the backbone and the reason.
    """
    path = check_weights_path(path, backbone, formats)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
            reason = _partial_load_reason(model, path, caught)
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError... for a wrong file.
            raise ModelError(
                f"The weights file '{path}' does not fit backbone {backbone!r}: {short_reason(exc)}"
            ) from exc
    if reason:
        raise ModelError(f"The weights file '{path}' does not fit backbone {backbone!r}: {reason}")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _partial_load_reason(model: "keras.Model", path: Path, caught: list[warnings.WarningMessage]) -> str:
    # Keras only warns when part of a file matches and ignores surplus arrays, which would
    # leave a silently half-random or wrong backbone.
    if any("freshly-initialized" in str(warning.message) for warning in caught):
        return "some layers found no weights in the file"
    if path.name.endswith(".weights.h5"):
        import h5py

        arrays: list[str] = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda key, obj: arrays.append(key) if isinstance(obj, h5py.Dataset) else None)
        if len(arrays) > len(model.weights):
            return (
                f"the file holds {len(arrays)} arrays but the backbone has {len(model.weights)} weights, "
                "so it was saved from a different (larger) architecture or configuration"
            )
    return ""


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """One line describing ``exc``: Keras messages can embed whole tensors, so keep the head."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    # A shape mismatch is the most useful detail and sits past the first line.
    shapes = re.search(r"variable\.shape=\([^)]*\), Received: value\.shape=\([^)]*\)", text)
    if shapes and shapes.group(0) not in reason:
        reason += f" ({shapes.group(0)})"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _is_download_failure(exc: BaseException) -> bool:
    # keras.utils.get_file wraps URLError/HTTPError in a bare Exception("URL fetch failure ...")
    # and raises ValueError when a downloaded or cached file fails its hash check.
    if isinstance(exc, (urllib.error.URLError, OSError, TimeoutError)):
        return True
    text = str(exc)
    return "URL fetch failure" in text or "file hash does not match" in text


def _keras_models_dir() -> str:
    """Where ``keras.utils.get_file`` caches downloads (it honours ``KERAS_HOME``)."""
    try:
        from keras.src.backend.config import keras_home  # Private, hence the fallback.

        return str(Path(keras_home()) / "models")
    except ImportError:  # pragma: no cover
        return str(Path("~/.keras/models").expanduser())
