"""Peak memory of the patch head on one large feature map, in its own process.

`python tests/reranking/run_patch_memory.py CHUNK_FLOATS` prints the growth of the process's peak
resident memory (MB, Linux's VmHWM, reset just before) while describing an 80×120 Lite0-sized map (K = 64, D = 112: 275 MB of
residuals if held at once) with `CHUNK_FLOATS` residual numbers per chunk.
"""

import sys
from pathlib import Path

import numpy as np


def status_mb(field: str) -> float:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    import keras

    from netvlad_tf import NetVLAD, PlaceRecognitionModel
    from netvlad_tf.models.model import WHITENING_LAYER
    from netvlad_tf.reranking import patch_descriptors
    from netvlad_tf.reranking.patch_descriptors import PatchDescriber
    from tests.support.tiny_backbone import tiny_backbone

    patch_descriptors.CHUNK_FLOATS = int(sys.argv[1])
    rng = np.random.default_rng(0)
    images = keras.Input((None, None, 3))
    backbone = tiny_backbone()
    head = keras.layers.Conv2D(112, 1)  # a 112-channel map, as Lite0's stride-16 cut
    model = PlaceRecognitionModel(keras.Model(images, head(backbone(images))),
                                  NetVLAD(num_clusters=64), whitening_dim=128)
    model.get_layer(WHITENING_LAYER).set_weights([rng.normal(size=(7168, 128)).astype(np.float32),
                                                   np.zeros(128, np.float32)])
    describer = PatchDescriber(model, "storage")
    describer.describe_feature_map(rng.normal(size=(8, 12, 112)).astype(np.float32))  # warm up
    large = rng.normal(size=(80, 120, 112)).astype(np.float32)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    before = status_mb("VmRSS")
    describer.describe_feature_map(large)
    print(f"{status_mb('VmHWM') - before:.0f}")


if __name__ == "__main__":
    main()
