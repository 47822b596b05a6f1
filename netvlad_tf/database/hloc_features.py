"""hloc's global-feature file: what `hloc.pairs_from_retrieval` reads.

hloc (Sarlin et al., CVPR 2019; github.com/cvg/Hierarchical-Localization) keeps global
descriptors in an HDF5 file with one group per image, named by the image's path relative to the
image folder (`db/0001.jpg`; HDF5 nests the groups at each `/`), holding the dataset
`global_descriptor` (float32) and `image_size` (the upright image's width and height, as
hloc's `extract_features` records them). Its `pairs_from_retrieval` lists the names as the
groups that hold a dataset, and matches their `global_descriptor`s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

import h5py
import numpy as np

from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.io.atomic_writes import atomic_file
from netvlad_tf.io.image_header import read_image_header

DESCRIPTOR_DATASET = "global_descriptor"
SIZE_DATASET = "image_size"


def hloc_names(image_paths: Sequence[str], image_root=None) -> list[str]:
    """hloc's image names: each path relative to `image_root`, with `/` separators.

    Args:
        image_paths: the images.
        image_root: the folder hloc's `image_dir` points at; None: the deepest folder holding
            every image (for `root/db/*.jpg` and `root/query/*.jpg`, `root`).

    Returns:
        One name per image, in order.

    Raises:
        ValueError: an image outside `image_root`, or two images with one name.

    Example:
    >>> hloc_names(["/data/sfm/db/1.jpg", "/data/sfm/query/2.jpg"])
    ['db/1.jpg', 'query/2.jpg']
    """
    absolute = [os.path.abspath(path) for path in image_paths]
    if image_root is None:
        image_root = os.path.commonpath([os.path.dirname(path) for path in absolute])
    root = os.path.abspath(image_root)
    names = []
    for path in absolute:
        relative = os.path.relpath(path, root)
        if relative.startswith(os.pardir):
            raise ValueError(f"Image {path} is outside the image root {root}.")
        names.append(PurePath(relative).as_posix())
    if len(set(names)) != len(names):
        raise ValueError(f"Two images share one name under {root}; hloc needs unique names.")
    return names


def write_hloc_features(descriptor_folder, output, image_root=None, overwrite: bool = False) -> Path:
    """Writes a finished descriptor folder (`netvlad-tf embed`) as hloc's global-feature file,
    a shard at a time.

    Args:
        descriptor_folder: the folder made by `embed_database`.
        output: the `.h5` file to write (atomically).
        image_root: names are image paths relative to it (see `hloc_names`).
        overwrite: replace an existing `output`.

    Returns:
        `output` as a Path.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf import build_netvlad_model, embed_database
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> dataset = read_csv_dataset(nordland_csv("test"))
    >>> folder = embed_database(build_netvlad_model(weights=None, pooling="mac"), dataset.database_paths[:2],
    ...                         dataset.database_utm[:2], root / "db", image_size=(32, 64), verbose=False)
    >>> with h5py.File(write_hloc_features(folder, root / "global-feats.h5"), "r") as features:
    ...     features["images-12510.png/global_descriptor"].shape, features["images-12510.png/image_size"][:].tolist()
    ((512,), [64, 32])
    """
    folder = DescriptorFolder.open(descriptor_folder)
    names = hloc_names(folder.plan_paths_and_coordinates()[0], image_root)
    with atomic_file(output, overwrite) as staging, h5py.File(staging, "w", libver="latest") as features:
        for shard in folder.shards():
            for row, descriptor, path in zip(shard.row_ids, shard.descriptors, shard.image_paths):
                group = features.create_group(names[row])
                group.create_dataset(DESCRIPTOR_DATASET, data=descriptor.astype(np.float32))
                group.create_dataset(SIZE_DATASET, data=np.array(_upright_width_height(path)))
    return Path(output)


def _upright_width_height(path) -> tuple[int, int]:
    header = read_image_header(path)
    if header is None:
        raise ValueError(f"Cannot read the size of {path}.")
    height, width = header.upright_size
    return width, height
