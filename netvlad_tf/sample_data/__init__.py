"""Real sample images shipped with the package (Nordland summer → winter, NRK, CC BY)."""

from __future__ import annotations

from pathlib import Path

NORDLAND_DIR = Path(__file__).parent / "nordland"
NORDLAND_PARTS = ("train", "test")
NORDLAND_640_DIR = Path(__file__).parent / "nordland_640x360"


def nordland_csv(part: str = "train") -> Path:
    """Path of the bundled Nordland CSV dataset: `"train"` (places 400–1199) or `"test"`
    (places 1250–1599, kept apart from training). See `nordland/README.md` for attribution.

    Example:
    >>> nordland_csv("test").name
    'nordland_test.csv'
    """
    if part not in NORDLAND_PARTS:
        raise ValueError(f"Unknown Nordland part {part!r}; use one of {NORDLAND_PARTS}.")
    return NORDLAND_DIR / f"nordland_{part}.csv"


def nordland_640x360_csv() -> Path:
    """Path of the bundled full-resolution Nordland set: 51 places at 640×360, summer database,
    winter queries (see `nordland_640x360/README.md` for attribution): big enough for patches.

    Example:
    >>> nordland_640x360_csv().name
    'nordland_640x360.csv'
    """
    return NORDLAND_640_DIR / "nordland_640x360.csv"
