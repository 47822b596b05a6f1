"""Stretches of the bundled Nordland training route and a tiny model initialised on them."""

from netvlad_tf import build_netvlad_model, initialize_clusters
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 64)


def nordland_stretch(first=0, count=40):
    """`count` consecutive places of the bundled training route, from place `first`."""
    return read_csv_dataset(nordland_csv("train")).select(
        list(range(first, first + count)), list(range(first, first + count)), name=f"nordland_{count}")


def stretch_with_store(directory, count):
    """`(dataset, model, store)`: a stretch of `count` places, the tiny model initialised on it,
    and its float32 frozen-feature store in `directory/f`."""
    from netvlad_tf.training import FrozenFeatureStore

    dataset = nordland_stretch(count=count)
    model = initialised_model(dataset)
    return dataset, model, FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, directory / "f", "float32",
                                                     verbose=False)


def initialised_model(dataset, num_clusters=4):
    """The tiny backbone + NetVLAD, its clusters initialised by k-means on `dataset`'s images."""
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=num_clusters)
    initialize_clusters(model, image_batches(dataset.database_paths, IMAGE_SIZE, batch_size=20),
                        num_descriptors=300, descriptors_per_image=8)
    return model
