"""Reads the authors' `dbStruct` `.mat` files (Pittsburgh 30k/250k, Tokyo 24/7, TokyoTM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.io.mat_file import load_mat

REQUIRED_FIELDS = (
    "whichSet",
    "dbImageFns",
    "utmDb",
    "qImageFns",
    "utmQ",
    "numImages",
    "numQueries",
    "posDistThr",
    "posDistSqThr",
    "nonTrivPosDistSqThr",
)


def read_mat_dataset(mat_path, image_root, query_root=None) -> GeoDataset:
    """Reads a `dbStruct` file such as `pitts30k_val.mat` with its images.

    Args:
        mat_path: the `.mat` file.
        image_root: folder that the database file names (`dbImageFns`) are relative to.
        query_root: folder of the query file names (`qImageFns`); default `image_root`.
            (Pittsburgh keeps queries under `queries_real/`.)

    Returns:
        A `GeoDataset`; for Tokyo Time Machine (`dbTimeStamp`, `qTimeStamp`) positives from
        the query's own capture date are excluded.

    Example, with the real Pittsburgh files (not bundled)::

        read_mat_dataset("datasets/pitts30k_val.mat", "Pittsburgh")
        # GeoDataset('pitts30k_val', database=10000, queries=7608)
    """
    mat_path = Path(mat_path)
    contents = load_mat(mat_path, "dbStruct file", squeeze_me=True, struct_as_record=False)
    if "dbStruct" not in contents:
        raise ValueError(f"{mat_path}: no 'dbStruct' variable; found {sorted(k for k in contents if not k.startswith('__'))}.")
    db_struct = contents["dbStruct"]
    missing = [field for field in REQUIRED_FIELDS if not hasattr(db_struct, field)]
    if missing:
        raise ValueError(f"{mat_path}: dbStruct lacks the fields {missing}.")
    image_root = Path(image_root)
    query_root = Path(query_root) if query_root is not None else image_root
    database_names = np.atleast_1d(db_struct.dbImageFns)
    query_names = np.atleast_1d(db_struct.qImageFns)
    # utmDb / utmQ are stored 2 × N (easting row, northing row).
    database_utm = np.asarray(db_struct.utmDb, dtype=np.float64).reshape(2, -1).T
    query_utm = np.asarray(db_struct.utmQ, dtype=np.float64).reshape(2, -1).T
    if len(database_names) != int(db_struct.numImages) or len(query_names) != int(db_struct.numQueries):
        raise ValueError(f"{mat_path}: numImages/numQueries disagree with the file lists.")
    has_timestamps = hasattr(db_struct, "dbTimeStamp") and hasattr(db_struct, "qTimeStamp")
    return GeoDataset(
        name=mat_path.stem,
        database_paths=[str(image_root / str(name)) for name in database_names],
        database_utm=database_utm,
        query_paths=[str(query_root / str(name)) for name in query_names],
        query_utm=query_utm,
        database_timestamps=np.atleast_1d(db_struct.dbTimeStamp) if has_timestamps else None,
        query_timestamps=np.atleast_1d(db_struct.qTimeStamp) if has_timestamps else None,
    )
