"""Reads the package's CSV dataset format: the way to bring your own geotagged photos."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset, check_images_exist
from netvlad_tf.data.utm import latlon_to_utm

SPLITS = ("database", "query")
METRIC_COLUMNS = ("easting", "northing")
GPS_COLUMNS = ("latitude", "longitude")


def read_csv_dataset(
    path, name: str | None = None, check_files: bool = True, require_queries: bool = True
) -> GeoDataset:
    """Reads a CSV with header `split,image_path,easting,northing` (metres) or
    `split,image_path,latitude,longitude` (degrees, projected to UTM), plus the optional
    columns `condition`, `timestamp`, `place_id`, `frame` and `sequence`.

    With `place_id` (a label of the place each image shows) the coordinate columns may be
    left out: positives are then the other images of the query's place and negatives images
    of other places (see `GeoDataset`).

    Sequence matching reads each split as a stream in row order, unless a `frame` column (a
    number) or the `timestamp` column gives the capture order; a `sequence` column names the
    recording each image belongs to (`GeoDataset.stream_order`).

    `split` is `database` or `query`; `image_path` is relative to the CSV's folder. The file
    is UTF-8, with or without the byte-order mark spreadsheet programs write; latitudes must
    lie in [-90, 90] and longitudes in [-180, 180].

    Args:
        path: the CSV file.
        name: dataset name (default: the file's stem).
        check_files: fail early, naming them, when image files are missing.
        require_queries: a CSV without query rows is an error (not when building an index).

    Example:
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> read_csv_dataset(nordland_csv("test"))
    GeoDataset('nordland_test', database=348, queries=348)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Dataset CSV {str(path)!r} does not exist.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as error:
        line_number = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line_number}: not UTF-8 (byte 0x{raw[error.start]:02x}); save the CSV as "
            "UTF-8 (in Excel: \"CSV UTF-8\")."
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    coordinate_columns = _coordinate_columns(columns, path)
    rows = list(reader)
    parsed = {split: {"paths": [], "coordinates": [], "conditions": [], "timestamps": [], "places": [],
                      "frames": [], "sequences": []}
              for split in SPLITS}
    for line_number, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip()
        if split not in SPLITS:
            raise ValueError(f"{path}:{line_number}: split must be one of {SPLITS}, got {split!r}.")
        image_path = (row.get("image_path") or "").strip()
        if not image_path:
            raise ValueError(f"{path}:{line_number}: image_path is empty.")
        target = parsed[split]
        target["paths"].append(str(path.parent / image_path))
        coordinates = [_finite_float(row[column], path, line_number, column) for column in coordinate_columns]
        if coordinate_columns == GPS_COLUMNS:
            _check_degrees(coordinates, path, line_number)
        target["coordinates"].append(coordinates)
        target["conditions"].append((row.get("condition") or "").strip())
        target["timestamps"].append((row.get("timestamp") or "").strip())
        if "frame" in columns:
            target["frames"].append(_finite_float(row["frame"], path, line_number, "frame"))
        target["sequences"].append((row.get("sequence") or "").strip())
        if "place_id" in columns:
            place = (row.get("place_id") or "").strip()
            if not place:
                raise ValueError(f"{path}:{line_number}: place_id is empty.")
            target["places"].append(place)
    for split in SPLITS if require_queries else ("database",):
        if not parsed[split]["paths"]:
            raise ValueError(f"{path}: no {split} rows; a dataset needs both splits.")
    if coordinate_columns == GPS_COLUMNS:
        both = np.array(parsed["database"]["coordinates"] + parsed["query"]["coordinates"])
        projected, _ = latlon_to_utm(both[:, 0], both[:, 1])
        num_database = len(parsed["database"]["paths"])
        parsed["database"]["coordinates"] = projected[:num_database]
        parsed["query"]["coordinates"] = projected[num_database:]
    has_timestamps = "timestamp" in columns
    has_places = "place_id" in columns
    dataset = GeoDataset(
        name=name or path.stem,
        database_paths=parsed["database"]["paths"],
        database_utm=parsed["database"]["coordinates"] if coordinate_columns else None,
        query_paths=parsed["query"]["paths"],
        query_utm=parsed["query"]["coordinates"] if coordinate_columns else None,
        query_conditions=parsed["query"]["conditions"] if "condition" in columns else None,
        database_timestamps=np.array(parsed["database"]["timestamps"]) if has_timestamps else None,
        query_timestamps=np.array(parsed["query"]["timestamps"]) if has_timestamps else None,
        database_place_ids=parsed["database"]["places"] if has_places else None,
        query_place_ids=parsed["query"]["places"] if has_places else None,
        database_frames=np.array(parsed["database"]["frames"]) if "frame" in columns else None,
        query_frames=np.array(parsed["query"]["frames"]) if "frame" in columns else None,
        database_sequences=np.array(parsed["database"]["sequences"]) if "sequence" in columns else None,
        query_sequences=np.array(parsed["query"]["sequences"]) if "sequence" in columns else None,
    )
    if check_files:
        check_images_exist(dataset)
    return dataset


def _coordinate_columns(columns: list[str], path: Path) -> tuple[str, ...]:
    missing = [c for c in ("split", "image_path") if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; found {columns}.")
    for candidate in (METRIC_COLUMNS, GPS_COLUMNS):
        if all(c in columns for c in candidate):
            return candidate
    if "place_id" in columns:
        return ()
    raise ValueError(
        f"{path}: needs coordinate columns easting,northing (metres) or latitude,longitude "
        f"(degrees), or a place_id column; found {columns}."
    )


def _finite_float(text, path: Path, line_number: int, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line_number}: {column} is not a number: {text!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line_number}: {column} is {text!r}; it must be a finite number.")
    return value


def _check_degrees(latitude_longitude: list[float], path: Path, line_number: int) -> None:
    latitude, longitude = latitude_longitude
    if not -90 <= latitude <= 90:
        raise ValueError(f"{path}:{line_number}: latitude {latitude} is outside [-90, 90].")
    if not -180 <= longitude <= 180:
        raise ValueError(f"{path}:{line_number}: longitude {longitude} is outside [-180, 180].")
