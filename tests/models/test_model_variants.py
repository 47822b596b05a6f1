"""Every model variant through the same harness (`tests/support/model_harness.py`)."""

import pytest

from netvlad_tf import build_netvlad_model
from tests.support.model_harness import check_model
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 48)


def tiny(**options):
    return build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, **options)


VARIANTS = {
    "netvlad": lambda: tiny(),
    "netvlad_whitened": lambda: tiny(whitening_dim=8),
    "netvlad_cluster_major": lambda: tiny(output_layout="cluster_major"),
    "mac": lambda: tiny().with_pooling("mac"),
    "gem": lambda: tiny().with_pooling("gem"),
    "avg": lambda: tiny().with_pooling("avg"),
    "efficientnet_lite0": lambda: build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=4),
}


# The paper's model in the fast tier; the other variants in the slow one.
FAST_VARIANTS = ("netvlad",)


@pytest.mark.parametrize("variant", [name if name in FAST_VARIANTS else pytest.param(name, marks=pytest.mark.slow)
                                     for name in sorted(VARIANTS)])
def test_model_variant_passes_the_harness(variant, tmp_path):
    check_model(VARIANTS[variant](), IMAGE_SIZE, tmp_path)
