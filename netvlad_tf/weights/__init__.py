"""Released weights in, Keras models out: torch-free `.pth` reading and the converters.

The names below are loaded on first use (PEP 562), so that a backbone can import the one
weight reader it needs (`netvlad_tf.weights.lite0_pytorch`) without importing the converters,
which build whole models from the backbones: the modules' imports stay free of cycles.

Example:
>>> from netvlad_tf.weights import PRESETS
>>> "efficientnet_lite0_imagenet" in PRESETS
True
"""

import importlib

# Public name → the module that defines it.
_EXPORTS = {
    "NetVLADArrays": "assembly",
    "netvlad_model_from_arrays": "assembly",
    "vgg16_from_arrays": "assembly",
    "lite0_imagenet_state_dict": "lite0_pytorch",
    "load_lite0_state_dict": "lite0_pytorch",
    "convert_matconvnet_netvlad": "matconvnet",
    "PRESETS": "presets",
    "Preset": "presets",
    "from_preset": "presets",
    "convert_pytorch_netvlad": "pytorch_netvlad",
    "convert_tf_checkpoint_netvlad": "tf_checkpoint",
    "read_tf_checkpoint": "tf_checkpoint",
    "CheckpointFormatError": "torch_checkpoint",
    "UnsafeCheckpointError": "torch_checkpoint",
    "read_torch_checkpoint": "torch_checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
