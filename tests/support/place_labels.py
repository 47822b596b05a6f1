"""The bundled Nordland CSVs rewritten with place IDs instead of coordinates."""

import csv
from pathlib import Path

from netvlad_tf.sample_data import nordland_csv


def nordland_by_place_id(split: str, folder: Path, frames_per_place: int = 30) -> Path:
    """A CSV of the bundled `split` whose rows carry `place_id` = the Nordland frame number
    // `frames_per_place` and no coordinate columns; image paths point at the bundled files."""
    source = Path(nordland_csv(split))
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    target = Path(folder) / f"nordland_{split}_places.csv"
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "image_path", "place_id"])
        for row in rows:
            writer.writerow([row["split"], str(source.parent / row["image_path"]),
                             f"place{int(row['nordland_frame']) // frames_per_place}"])
    return target
