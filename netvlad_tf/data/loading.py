"""Opens a dataset from a path: a CSV, an authors' `.mat` file or a VPR-benchmark folder."""

from __future__ import annotations

from pathlib import Path

from netvlad_tf.data.csv_dataset import read_csv_dataset
from netvlad_tf.data.folder_dataset import read_folder_dataset
from netvlad_tf.data.geo_dataset import GeoDataset, check_images_exist
from netvlad_tf.data.mat_dataset import read_mat_dataset


def open_dataset(path, image_root=None, query_root=None, split: str = "test",
                 require_queries: bool = True, check_files: bool = True) -> GeoDataset:
    """`*.csv` → `read_csv_dataset`; `*.mat` → `read_mat_dataset` (needs `image_root`);
    a folder → `read_folder_dataset(path, split)`.

    Args:
        path: the CSV, `.mat` file or folder.
        image_root: the images of a `.mat` dataset.
        query_root: its query images, when not under `image_root`.
        split: `"train"`, `"val"` or `"test"` of a folder dataset.
        require_queries: a CSV without query rows is an error (False: a database only).
        check_files: fail early, naming them, when image files are missing (False: a reader
            that skips unreadable images finds them itself).

    Returns:
        The `GeoDataset`.

    Example:
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> open_dataset(nordland_csv("test")).num_queries
    348
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_csv_dataset(path, check_files=check_files, require_queries=require_queries)
    if path.suffix.lower() == ".mat":
        if image_root is None:
            raise ValueError(f"{path} is a .mat dataset: also give the folder of its images (--image_root).")
        dataset = read_mat_dataset(path, image_root, query_root)
        if check_files:
            check_images_exist(dataset)
        return dataset
    if path.is_dir():
        return read_folder_dataset(path, split)
    raise FileNotFoundError(f"{path}: not a .csv or .mat file, nor a dataset folder.")
