"""Latitude/longitude (WGS84) to UTM metres, for datasets tagged with GPS."""

from __future__ import annotations

import numpy as np

_SEMI_MAJOR_AXIS_M = 6_378_137.0
_FLATTENING = 1 / 298.257223563
_SCALE = 0.9996
_FALSE_EASTING_M = 500_000.0
_FALSE_NORTHING_SOUTH_M = 10_000_000.0


def utm_zone(longitude_deg: float) -> int:
    """The UTM zone (1–60) of a longitude.

    Example:
    >>> utm_zone(-79.99)
    17
    """
    return int((longitude_deg + 180.0) // 6.0) % 60 + 1


def latlon_to_utm(latitude_deg, longitude_deg, zone: int | None = None) -> tuple[np.ndarray, int]:
    """Projects WGS84 coordinates to UTM easting/northing in metres (Snyder's series).

    All points use one zone (by default that of their mean longitude), so distances between
    them stay Euclidean even when a route crosses a zone border. Southern latitudes get the
    10 000 km false northing of that hemisphere's convention.

    Args:
        latitude_deg, longitude_deg: arrays of degrees.
        zone: force a UTM zone.

    Returns:
        `((N, 2) easting/northing, zone)`.

    Example:
    >>> coordinates, zone = latlon_to_utm([0.0], [3.0])
    >>> coordinates.round(3).tolist(), zone
    ([[500000.0, 0.0]], 31)
    """
    latitude = np.radians(np.asarray(latitude_deg, dtype=np.float64))
    longitude_deg = np.asarray(longitude_deg, dtype=np.float64)
    if np.any(np.abs(np.degrees(latitude)) > 84):
        raise ValueError("UTM covers latitudes between 80°S and 84°N only.")
    if zone is None:
        zone = utm_zone(float(np.mean(longitude_deg)))
    central_meridian = np.radians((zone - 1) * 6 - 180 + 3)
    e2 = _FLATTENING * (2 - _FLATTENING)
    ep2 = e2 / (1 - e2)
    sin_lat, cos_lat, tan_lat = np.sin(latitude), np.cos(latitude), np.tan(latitude)
    radius_n = _SEMI_MAJOR_AXIS_M / np.sqrt(1 - e2 * sin_lat**2)
    t = tan_lat**2
    c = ep2 * cos_lat**2
    a = cos_lat * (np.radians(longitude_deg) - central_meridian)
    meridian_arc = _SEMI_MAJOR_AXIS_M * (
        (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256) * latitude
        - (3 * e2 / 8 + 3 * e2**2 / 32 + 45 * e2**3 / 1024) * np.sin(2 * latitude)
        + (15 * e2**2 / 256 + 45 * e2**3 / 1024) * np.sin(4 * latitude)
        - (35 * e2**3 / 3072) * np.sin(6 * latitude)
    )
    easting = _FALSE_EASTING_M + _SCALE * radius_n * (
        a + (1 - t + c) * a**3 / 6 + (5 - 18 * t + t**2 + 72 * c - 58 * ep2) * a**5 / 120
    )
    northing = _SCALE * (
        meridian_arc
        + radius_n
        * tan_lat
        * (
            a**2 / 2
            + (5 - t + 9 * c + 4 * c**2) * a**4 / 24
            + (61 - 58 * t + t**2 + 600 * c - 330 * ep2) * a**6 / 720
        )
    )
    northing = np.where(latitude < 0, northing + _FALSE_NORTHING_SOUTH_M, northing)
    return np.stack([easting, northing], axis=-1).reshape(-1, 2), zone
