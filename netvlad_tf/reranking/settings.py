"""Patch-NetVLAD's settings: which patches, how many dimensions, which spatial check.

Reference: Hausler et al., "Patch-NetVLAD: Multi-Scale Fusion of Locally-Global Descriptors for
Place Recognition", CVPR 2021, Sec. 4.2 and Table 3; the authors' `performance.ini`,
`speed.ini` and `storage.ini`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The spatial checks: RANSAC homography inliers (OpenCV) or the authors' rapid spatial scoring.
SCORINGS = ("ransac", "rapid")


@dataclass(frozen=True)
class PatchSettings:
    """How patch descriptors are made and compared.

    Attributes:
        patch_sizes: p of each patch size, in feature-map cells per side.
        strides: cells between neighbouring patches, one per size.
        weights: each size's weight in the fused score (the authors' `patchWeights2Use`).
        dims: whitened dimensions kept per patch (the first ones, as `--dims` keeps them);
            None, or more than the model whitens to: all of the model's.
        scoring: `"ransac"` or `"rapid"` (see `SCORINGS`).

    Example:
    >>> PatchSettings((5,), (1,), (1.0,), 512, "rapid").patch_sizes
    (5,)
    """

    patch_sizes: tuple[int, ...]
    strides: tuple[int, ...]
    weights: tuple[float, ...]
    dims: int | None
    scoring: str

    def __post_init__(self):
        if not self.patch_sizes or not len(self.patch_sizes) == len(self.strides) == len(self.weights):
            raise ValueError(f"Patch settings need one stride and one weight per patch size, got sizes "
                             f"{self.patch_sizes}, strides {self.strides}, weights {self.weights}.")
        if any(int(value) != value or value < 1 for value in (*self.patch_sizes, *self.strides)):
            raise ValueError(f"Patch sizes and strides must be positive whole numbers of cells, got sizes "
                             f"{self.patch_sizes} and strides {self.strides}.")
        if any(not weight >= 0 for weight in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"Patch weights must be non-negative and not all zero, got {self.weights}.")
        if self.dims is not None and (int(self.dims) != self.dims or self.dims < 1):
            raise ValueError(f"Patch dims must be a positive number of dimensions or None, got {self.dims!r}.")
        if self.scoring not in SCORINGS:
            raise ValueError(f"Unknown patch scoring {self.scoring!r}; use one of {SCORINGS}.")


# The authors' three configurations (their Table 3: R@1 and cost trade off).
PATCH_SETTINGS = {
    "performance": PatchSettings((2, 5, 8), (1, 1, 1), (0.45, 0.15, 0.4), 4096, "ransac"),
    "speed": PatchSettings((5,), (1,), (1.0,), 512, "rapid"),
    "storage": PatchSettings((5,), (1,), (1.0,), 128, "rapid"),
}


def patch_settings(settings: str | PatchSettings) -> PatchSettings:
    """The settings a name (`"performance"`, `"speed"`, `"storage"`) stands for, or `settings` itself.

    Example:
    >>> patch_settings("speed").dims
    512
    """
    if isinstance(settings, PatchSettings):
        return settings
    if settings not in PATCH_SETTINGS:
        raise ValueError(f"Unknown patch settings {settings!r}; use one of {sorted(PATCH_SETTINGS)} or a PatchSettings.")
    return PATCH_SETTINGS[settings]
