"""Released weights in, Keras models out: torch-free `.pth` reading and the converters.

Example:
>>> from netvlad_tf.weights import PRESETS
>>> "efficientnet_lite0_imagenet" in PRESETS
True
"""

from netvlad_tf.weights.assembly import NetVLADArrays, netvlad_model_from_arrays, vgg16_from_arrays
from netvlad_tf.weights.matconvnet import convert_matconvnet_netvlad
from netvlad_tf.weights.presets import PRESETS, Preset, from_preset
from netvlad_tf.weights.pytorch_netvlad import convert_pytorch_netvlad
from netvlad_tf.weights.tf_checkpoint import convert_tf_checkpoint_netvlad, read_tf_checkpoint
from netvlad_tf.weights.torch_checkpoint import UnsafeCheckpointError, read_torch_checkpoint

__all__ = [
    "NetVLADArrays",
    "PRESETS",
    "Preset",
    "UnsafeCheckpointError",
    "convert_matconvnet_netvlad",
    "convert_pytorch_netvlad",
    "convert_tf_checkpoint_netvlad",
    "from_preset",
    "netvlad_model_from_arrays",
    "read_tf_checkpoint",
    "read_torch_checkpoint",
    "vgg16_from_arrays",
]
