"""Writes `torch.save`-layout files with chosen tensor views, without torch: crafted inputs.

The pickle names `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` exactly as torch
writes them; stand-ins are registered under those names only while pickling.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

from netvlad_tf.io.torch_checkpoint import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION


class StorageRef:
    def __init__(self, key: str, storage_type: str, numel: int):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class TensorView:
    """What the pickle says of one tensor: its storage and the view (offset, size, stride)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


@contextlib.contextmanager
def _torch_names():
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "HalfStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _pickle(obj, torch) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)

    def persistent_id(value):
        if isinstance(value, StorageRef):
            storage_type = getattr(torch, value.storage_type, value.storage_type)
            return ("storage", storage_type, value.key, "cpu", value.numel)
        return None

    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buffer.getvalue()


def write_zip_checkpoint(path, state_dict: dict, storages: dict[str, bytes], extra: dict | None = None) -> None:
    """`state_dict` of name → TensorView (or plain values); `storages` key → raw bytes; `extra`
    more top-level entries (epoch, recalls…)."""
    with _torch_names() as torch:
        data = _pickle({"state_dict": state_dict, **(extra or {})}, torch)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)


def write_legacy_checkpoint(path, state_dict: dict, storages: dict[str, tuple[int, bytes]]) -> None:
    """Legacy layout; `storages` key → (element count written in the header, raw bytes)."""
    with _torch_names() as torch:
        parts = [pickle.dumps(part, protocol=2) for part in
                 (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True})]
        parts += [_pickle({"state_dict": state_dict}, torch), pickle.dumps(list(storages), protocol=2)]
    with open(path, "wb") as file:
        for part in parts:
            file.write(part)
        for numel, raw in storages.values():
            file.write(struct.pack("<q", numel) + raw)
