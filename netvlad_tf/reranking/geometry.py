"""Where each cell of a backbone's feature map looks in the image: its receptive-field centre.

Patch-NetVLAD places a patch's keypoint at the centre of the receptive fields it covers. The
authors hard-code VGG16 conv5_3's (field 196 px, stride 16, padding 90: cell x is centred on
pixel 16·x + 7.5); here the geometry is read from the backbone's own layers, so EfficientNet-Lite0
and any registered backbone get theirs, and at the image size actually used (TensorFlow's "same"
padding puts its extra pixel after the image, and only when a side does not divide the stride).

Reference: Hausler et al., CVPR 2021, Sec. 3.4 and `calc_receptive_boxes` of their
`patchnetvlad/models/local_matcher.py`; Araujo et al., "Computing receptive fields of
convolutional neural networks", Distill 2019 (the recurrences below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

# Layers that slide a window over the map: their kernel, stride, dilation and padding move it.
_WINDOW_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                  keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclass(frozen=True)
class AxisGeometry:
    """One axis of a feature map in image pixels (pixel i's centre is at coordinate i).

    Attributes:
        cells: cells along the axis.
        stride: pixels between the centres of neighbouring cells.
        first_centre: the centre of cell 0's receptive field.
        receptive_field: the field's width in pixels (inside the padded image).
    """

    cells: int
    stride: float
    first_centre: float
    receptive_field: float

    def centres(self, cell_indices) -> np.ndarray:
        """Receptive-field centres of the given cells, in pixels."""
        return self.first_centre + self.stride * np.asarray(cell_indices, np.float64)


@dataclass(frozen=True)
class FeatureGeometry:
    """Both axes of a backbone's feature map for one image size."""

    height: AxisGeometry
    width: AxisGeometry

    @property
    def grid(self) -> tuple[int, int]:
        """`(rows, columns)` of the feature map."""
        return self.height.cells, self.width.cells


def feature_geometry(backbone: keras.Model, image_size: tuple[int, int]) -> FeatureGeometry:
    """The receptive-field geometry of `backbone`'s output for images of `image_size`.

    Args:
        backbone: a functional model from images to a feature map (nested models are followed).
        image_size: `(height, width)` of the images it is given.

    Returns:
        A `FeatureGeometry`.

    Raises:
        ValueError: a layer whose effect on positions is unknown changes the map's size, or two
            inputs of a merge disagree.

    Example:
    >>> from netvlad_tf.backbones import vgg16_conv5_3
    >>> geometry = feature_geometry(vgg16_conv5_3(weights=None), (480, 640))
    >>> geometry.grid, geometry.width.stride, geometry.width.first_centre, geometry.width.receptive_field
    ((30, 40), 16.0, 7.5, 196.0)
    """
    height, width = (int(side) for side in image_size)
    start = (AxisGeometry(height, 1.0, 0.0, 1.0), AxisGeometry(width, 1.0, 0.0, 1.0))
    axes = _through_model(backbone, start)
    return FeatureGeometry(*axes)


def _through_model(model: keras.Model, inputs: tuple[AxisGeometry, AxisGeometry]):
    by_tensor: dict[int, tuple[AxisGeometry, AxisGeometry]] = {id(model.inputs[0]): inputs}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node = layer._inbound_nodes[0]
        known = [by_tensor[id(tensor)] for tensor in node.input_tensors if id(tensor) in by_tensor]
        if not known:
            continue  # a branch that does not start from the images
        merged = tuple(_merged(layer, [geometry[axis] for geometry in known]) for axis in range(2))
        if isinstance(layer, keras.Model):
            result = _through_model(layer, merged)
        elif isinstance(layer, (*_WINDOW_LAYERS, keras.layers.ZeroPadding2D)):
            result = tuple(_through_layer(layer, axis, geometry) for axis, geometry in enumerate(merged))
        else:
            _check_same_size(layer, node, merged)
            result = merged
        for tensor in node.output_tensors:
            by_tensor[id(tensor)] = result
    return by_tensor[id(model.outputs[0])]


def _merged(layer, inputs: list[AxisGeometry]) -> AxisGeometry:
    """One geometry for a layer's inputs (a residual sum): same cells at the same places; the
    widest field (a skip connection sees less of the image than the branch beside it)."""
    placed = {(geometry.cells, geometry.stride, geometry.first_centre) for geometry in inputs}
    if len(placed) > 1:
        raise ValueError(f"The inputs of {layer.name} come from different positions; keypoints cannot be placed "
                         "for this backbone.")
    return max(inputs, key=lambda geometry: geometry.receptive_field)


def _check_same_size(layer, node, geometry: tuple[AxisGeometry, AxisGeometry]) -> None:
    """A layer that neither slides a window nor pads must keep each cell where it is."""
    cells = (geometry[0].cells, geometry[1].cells)
    shapes = [(1, *cells, *tensor.shape[3:]) for tensor in node.input_tensors]
    try:
        output_shape = layer.compute_output_shape(shapes if len(shapes) > 1 else shapes[0])
    except Exception:  # a layer that cannot say: judged by its symbolic output below
        output_shape = node.output_tensors[0].shape
    if len(output_shape) != 4 or any(side is not None and side != count for side, count in zip(output_shape[1:3], cells)):
        raise ValueError(f"{layer.name} ({type(layer).__name__}) changes the feature map's size in a way netvlad_tf "
                         "cannot place keypoints for.")


def _through_layer(layer, axis: int, geometry: AxisGeometry) -> AxisGeometry:
    if isinstance(layer, keras.layers.ZeroPadding2D):
        before, after = layer.padding[axis]
        return AxisGeometry(geometry.cells + before + after, geometry.stride,
                            geometry.first_centre - before * geometry.stride, geometry.receptive_field)
    kernel = _pair(getattr(layer, "kernel_size", None) or layer.pool_size)[axis]
    stride = _pair(layer.strides)[axis]
    dilation = _pair(getattr(layer, "dilation_rate", 1))[axis]
    span = dilation * (kernel - 1) + 1
    if layer.padding == "same":
        cells = math.ceil(geometry.cells / stride)
        pad_before = max((cells - 1) * stride + span - geometry.cells, 0) // 2
    else:
        cells = (geometry.cells - span) // stride + 1
        pad_before = 0
    return AxisGeometry(cells, geometry.stride * stride,
                        geometry.first_centre + ((span - 1) / 2 - pad_before) * geometry.stride,
                        geometry.receptive_field + (span - 1) * geometry.stride)


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(side) for side in value)


def patch_grid(geometry: FeatureGeometry, patch_size: int, stride: int) -> tuple[int, int]:
    """`(rows, columns)` of p×p patches taken every `stride` cells (the authors' "valid" box
    filter: `(cells − p) // stride + 1` per axis).

    Raises:
        ValueError: the patch is larger than the feature map.

    Example:
    >>> axis = AxisGeometry(30, 16.0, 7.5, 196.0)
    >>> patch_grid(FeatureGeometry(axis, axis), 5, 1)
    (26, 26)
    """
    rows, columns = geometry.grid
    if patch_size > min(rows, columns):
        raise ValueError(f"A patch of {patch_size}×{patch_size} cells is larger than the {rows}×{columns} feature map; "
                         "use a smaller patch size or larger images.")
    return (rows - patch_size) // stride + 1, (columns - patch_size) // stride + 1


def patch_keypoints(geometry: FeatureGeometry, patch_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Image positions and grid positions of every patch, in the order patch descriptors are
    flattened (row by row).

    A patch of p×p cells starting at cell (r·s, c·s) is placed midway between the centres of its
    first and last cells: `x = first_centre + stride_px · (c·s + (p − 1)/2)` (the authors' midpoint
    of the first cell's box start and the last cell's box end, which is the same point).

    Args:
        geometry: the backbone's feature geometry for the image size.
        patch_size: p, cells per side.
        stride: s, cells between patches.

    Returns:
        `keypoints` `(N, 2)` float `(x, y)` in pixels of the resized image, and `grid`
        `(N, 2)` int `(column, row)` of each patch (what rapid spatial scoring compares).

    Example:
    >>> from netvlad_tf.backbones import vgg16_conv5_3
    >>> geometry = feature_geometry(vgg16_conv5_3(weights=None), (480, 640))
    >>> keypoints, grid = patch_keypoints(geometry, 5, 1)
    >>> keypoints[0].tolist(), grid[-1].tolist()
    ([39.5, 39.5], [35, 25])
    """
    rows, columns = patch_grid(geometry, patch_size, stride)
    row_index, column_index = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    grid = np.stack([column_index.ravel(), row_index.ravel()], axis=1)
    middle = (patch_size - 1) / 2
    keypoints = np.stack([geometry.width.centres(grid[:, 0] * stride + middle),
                          geometry.height.centres(grid[:, 1] * stride + middle)], axis=1)
    return keypoints, grid
