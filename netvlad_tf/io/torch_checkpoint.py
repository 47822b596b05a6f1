"""Reads PyTorch `.pth` files into NumPy arrays without torch and without running their code.

`torch.save` writes a pickle whose tensors point at raw storages kept beside it: in a zip
archive (`archive/data.pkl` + `archive/data/<key>`, PyTorch ≥ 1.6) or, in the legacy format,
appended after the pickle. A plain `pickle.load` would import and call whatever the file names;
the unpickler here resolves only an allow-list of names (tensor rebuilders, storage types,
ordered dicts, NumPy scalars) and refuses everything else.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

# torch.save's legacy header: this magic number, then the protocol version 1001.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


# Larger than any tensor of a NetVLAD model (VGG16 + 4096-D whitening: 0.5 GB in all).
MAX_TENSOR_BYTES = 4 * 2**30


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The checkpoint names a Python object outside the allow-list; nothing from it was run."""


class CheckpointFormatError(ValueError):
    """The checkpoint is damaged or crafted: a tensor or storage does not describe valid data."""


class _StorageType:
    """Stands for `torch.FloatStorage` & co. in a pickle: only its element type matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


def _storage_array(raw: bytes, storage_type: _StorageType, key: str) -> np.ndarray:
    if len(raw) % storage_type.itemsize():
        raise CheckpointFormatError(
            f"storage {key} holds {len(raw)} bytes, not a whole number of "
            f"{storage_type.name} elements ({storage_type.itemsize()} bytes each)"
        )
    if storage_type.dtype == "bfloat16":
        # bfloat16 is the upper half of a float32: widen it exactly.
        upper = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return upper.view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder("<"))


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _LazyTensor:
    # Every tensor is checked against its storage once the file is read (see `_LazyTensor`).
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused) -> np.ndarray:
    return data


def _numpy_scalar(dtype, raw=None):
    return np.frombuffer(raw, dtype=dtype)[0] if raw is not None else dtype.type()


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # Protocol-2 pickles spell bytes as codecs.encode(text, "latin1"); nothing else is allowed.
    if encoding != "latin1":
        raise UnsafeCheckpointError(f"Refusing codecs.encode with encoding {encoding!r}.")
    return text.encode("latin1")


_ALLOWED_CALLABLES = {
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed names; storages come from `load_storage(type, key, numel)`."""

    def __init__(self, file: BinaryIO, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[(module, name)]
        raise UnsafeCheckpointError(
            f"The checkpoint refers to {module}.{name}, which a weights file has no reason to "
            "contain; it was not loaded. Only tensors, dicts and numbers are read."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"Unsupported persistent id in checkpoint: {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"Unsupported storage type in checkpoint: {storage_type!r}")
        return self._load_storage(storage_type, key)


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Loads what `torch.save` wrote, with every tensor as a NumPy array; torch is not needed.

    Args:
        path: a `.pth` / `.pth.tar` file in the zip format (PyTorch ≥ 1.6) or the legacy one.

    Returns:
        The saved object (usually a dict or OrderedDict of name → `np.ndarray`).

    Raises:
        FileNotFoundError: `path` does not exist.
        UnsafeCheckpointError: the file names a Python object that is not a tensor rebuilder,
            a storage type, an ordered dict or a NumPy scalar (no code from it was run).
        CheckpointFormatError: a tensor's view does not lie inside its storage, a storage is
            incomplete or of the wrong size (crafted or damaged files); the message names the
            tensor.
        ValueError: the file is not a torch checkpoint, or is truncated or damaged.

    Example:
    >>> import tempfile, zipfile, pickle, os
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.pth")
    >>> with zipfile.ZipFile(path, "w") as archive:
    ...     archive.writestr("archive/data.pkl", pickle.dumps({"epoch": 3}))
    >>> read_torch_checkpoint(path)
    {'epoch': 3}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
    try:
        if zipfile.is_zipfile(path):
            saved = _read_zip_checkpoint(path)
        else:
            with open(path, "rb") as file:
                saved = _read_legacy_checkpoint(file, path)
        return _resolve_pending(saved)
    except UnsafeCheckpointError:
        raise
    except CheckpointFormatError as error:
        raise CheckpointFormatError(f"{path!r}: {error}.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, struct.error, zipfile.BadZipFile, MemoryError,
            RecursionError) as error:
        # Whatever a damaged pickle makes the unpickler raise: one message naming the file.
        raise ValueError(f"{path!r} is not a readable torch checkpoint ({type(error).__name__}: {error}).") from None


def _read_zip_checkpoint(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        if not pickles:
            raise ValueError(f"{path!r} is a zip file but not a torch checkpoint (no data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, np.ndarray] = {}

        def load_storage(storage_type: _StorageType, key: str) -> np.ndarray:
            if key not in storages:
                member = f"{prefix}data/{key}"
                if member not in archive.namelist():
                    raise CheckpointFormatError(f"storage {key} is missing from the archive")
                storages[key] = _storage_array(archive.read(member), storage_type, key)
            return storages[key]

        with archive.open(pickles[0]) as data:
            return _RestrictedUnpickler(io.BytesIO(data.read()), load_storage).load()


def _read_legacy_checkpoint(file: BinaryIO, path: str) -> Any:
    header = _RestrictedUnpickler(file, _no_storage)
    try:
        magic = header.load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        if isinstance(error, UnsafeCheckpointError):
            raise
        raise ValueError(f"{path!r} is not a torch checkpoint: {error}") from None
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path!r} is not a torch checkpoint (no torch.save header).")
    protocol = _RestrictedUnpickler(file, _no_storage).load()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path!r} uses torch.save protocol {protocol}; only 1001 is known.")
    _RestrictedUnpickler(file, _no_storage).load()  # sys_info: endianness and type sizes
    pending: dict[str, _PendingStorage] = {}

    def load_storage(storage_type: _StorageType, key: str):
        # The storage bytes follow the pickle, so hand out a placeholder filled in below.
        return pending.setdefault(key, _PendingStorage(key, storage_type))

    saved = _RestrictedUnpickler(file, load_storage).load()
    storage_keys = _RestrictedUnpickler(file, _no_storage).load()
    for key in storage_keys:
        if key not in pending:
            raise ValueError(f"{path!r} lists storage {key} that no tensor uses.")
        storage = pending[key]
        (numel,) = struct.unpack("<q", file.read(8))
        remaining = os.fstat(file.fileno()).st_size - file.tell()
        if not 0 <= numel * storage.storage_type.itemsize() <= remaining:
            raise CheckpointFormatError(
                f"storage {key} claims {numel} elements; the file has {remaining} bytes left (truncated?)"
            )
        raw = file.read(numel * storage.storage_type.itemsize())
        storage.array = _storage_array(raw, storage.storage_type, key)
    return saved


def _no_storage(storage_type, key):
    raise pickle.UnpicklingError("Unexpected tensor storage in a checkpoint header.")


class _PendingStorage:
    """A legacy-format storage whose bytes come after the pickle; `array` is set once read."""

    def __init__(self, key: str, storage_type: _StorageType):
        self.key, self.storage_type = key, storage_type
        self.array: np.ndarray | None = None


def _resolve_pending(saved, name: str = "checkpoint"):
    """Replaces tensor placeholders by their checked arrays; `name` is the path to each."""
    if isinstance(saved, _LazyTensor):
        return saved.resolve(name)
    if isinstance(saved, collections.OrderedDict):
        return collections.OrderedDict(
            (key, _resolve_pending(value, f"{name}[{key!r}]")) for key, value in saved.items()
        )
    if isinstance(saved, dict):
        return {key: _resolve_pending(value, f"{name}[{key!r}]") for key, value in saved.items()}
    if isinstance(saved, (list, tuple)):
        return type(saved)(_resolve_pending(value, f"{name}[{index}]") for index, value in enumerate(saved))
    return saved


class _LazyTensor:
    """A tensor as the pickle describes it: a view (offset, size, stride) of a storage."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage, self.storage_offset, self.size, self.stride = storage, storage_offset, size, stride

    def resolve(self, name: str) -> np.ndarray:
        """The tensor's array, after checking that the view lies inside its storage."""
        storage = self.storage.array if isinstance(self.storage, _PendingStorage) else self.storage
        if isinstance(self.storage, _PendingStorage) and storage is None:
            raise CheckpointFormatError(f"tensor {name}: its storage {self.storage.key} was never written")
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise CheckpointFormatError(f"tensor {name}: its storage is a {type(self.storage).__name__}, not a storage")
        offset, size, stride = self.storage_offset, self.size, self.stride
        if not _is_count(offset) or not _is_shape(size) or not _is_shape(stride) or len(size) != len(stride):
            raise CheckpointFormatError(
                f"tensor {name}: offset {offset!r}, size {size!r} and stride {stride!r} are not a "
                "valid view (non-negative integers, one stride per dimension)"
            )
        numel = math.prod(size)
        if numel * storage.itemsize > MAX_TENSOR_BYTES:
            raise CheckpointFormatError(
                f"tensor {name}: size {tuple(size)} is {numel * storage.itemsize / 2**30:.1f} GiB, over the "
                f"{MAX_TENSOR_BYTES / 2**30:.0f} GiB any NetVLAD weight could need"
            )
        if numel == 0:
            return np.zeros(size, dtype=storage.dtype.newbyteorder("="))
        last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
        if last >= len(storage):
            raise CheckpointFormatError(
                f"tensor {name}: its view (offset {offset}, size {tuple(size)}, stride {tuple(stride)}) "
                f"reaches element {last} of a storage of {len(storage)}"
            )
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size), strides=tuple(step * storage.itemsize for step in stride),
            writeable=False,
        )
        return np.ascontiguousarray(view).astype(storage.dtype.newbyteorder("="), copy=False)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_shape(values) -> bool:
    return isinstance(values, (tuple, list)) and all(_is_count(value) for value in values)
