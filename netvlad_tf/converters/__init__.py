"""Released weights in, Keras models out: the authors' MatConvNet / hloc `.mat` files,
netvlad_tf_open's TF1 checkpoint and the PyTorch port's / Patch-NetVLAD's `.pth` checkpoints
(read without torch). Each converter registers itself in `netvlad_tf.models.presets.CONVERTERS`.

Example:
>>> from netvlad_tf.models.presets import CONVERTERS
>>> CONVERTERS["matconvnet"] is convert_matconvnet_netvlad
True
"""

from netvlad_tf.converters.assembly import NetVLADArrays, netvlad_model_from_arrays, vgg16_from_arrays
from netvlad_tf.converters.matconvnet import convert_matconvnet_netvlad
from netvlad_tf.converters.pytorch_netvlad import convert_pytorch_netvlad
from netvlad_tf.converters.tf_checkpoint import convert_tf_checkpoint_netvlad, read_tf_checkpoint

__all__ = [
    "NetVLADArrays",
    "convert_matconvnet_netvlad",
    "convert_pytorch_netvlad",
    "convert_tf_checkpoint_netvlad",
    "netvlad_model_from_arrays",
    "read_tf_checkpoint",
    "vgg16_from_arrays",
]
