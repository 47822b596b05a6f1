"""Geotagged datasets and image loading."""

from netvlad_tf.data.csv_dataset import read_csv_dataset
from netvlad_tf.data.folder_dataset import read_folder_dataset
from netvlad_tf.data.geo_dataset import (
    EVAL_POSITIVE_RADIUS_M,
    NEGATIVE_RADIUS_M,
    TRAIN_POSITIVE_RADIUS_M,
    GeoDataset,
)
from netvlad_tf.data.images import image_batches, image_dataset, load_image
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.data.mat_dataset import read_mat_dataset
from netvlad_tf.data.utm import latlon_to_utm

__all__ = [
    "EVAL_POSITIVE_RADIUS_M",
    "GeoDataset",
    "NEGATIVE_RADIUS_M",
    "TRAIN_POSITIVE_RADIUS_M",
    "image_batches",
    "image_dataset",
    "latlon_to_utm",
    "load_image",
    "open_dataset",
    "read_csv_dataset",
    "read_folder_dataset",
    "read_mat_dataset",
]
