"""SavedModel export for TF Serving: `<base>/<model_name>/<version>/` with two signatures."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.data.images import MAX_DECODE_PIXELS, upright
from netvlad_tf.export.constant_graph import constant_forward
from netvlad_tf.export.exif_orientation import jpeg_orientation
from netvlad_tf.export.parity import ParityReport, measure_parity
from netvlad_tf.io.atomic_writes import atomic_directory

# The `encoded` signature resizes every decoded image to this size (bilinear) so that a batch
# of photos of different sizes can be stacked; Pittsburgh and Tokyo images are 480×640.
DEFAULT_ENCODED_IMAGE_SIZE = (480, 640)
SAVED_MODEL_MAX_ABS_DIFF = 1e-5
# Requests the graph itself refuses (checked in the graph, so TF Serving's C++ path refuses them
# too, before any kernel runs). The smallest side a stride-32 backbone maps to one cell:
MIN_IMAGE_SIDE = 32
# `serving_default`: VGG16's first activations alone take 64 × H × W × 4 bytes; 2048² ≈ 1 GB.
MAX_PIXELS_IMAGE_SIDE = 2048
MAX_PIXELS_PER_REQUEST = 32 * 2**20
# `encoded`: a photo's size is read from its header before it is decoded, and refused above
# the image policy's limit (MAX_DECODE_PIXELS, 50 MP).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def export_saved_model(
    model: keras.Model,
    base_dir,
    model_name: str = "netvlad",
    version: int = 1,
    encoded_image_size: tuple[int, int] = DEFAULT_ENCODED_IMAGE_SIZE,
    overwrite: bool = False,
) -> Path:
    """Writes the full model (whitening included) as a SavedModel TF Serving can load.

    Signatures:
        `serving_default`: `images` uint8 `(B, H, W, 3)` → `descriptor` `(B, dim)`, with
        `MIN_IMAGE_SIDE` ≤ H, W ≤ `MAX_PIXELS_IMAGE_SIDE` and B·H·W ≤ `MAX_PIXELS_PER_REQUEST`.
        `encoded`: `images` string `(B,)` of JPEG/PNG bytes → `descriptor`; each image is
        decoded to RGB, turned upright by a JPEG's EXIF orientation (as every reader of the
        package does) and resized to `encoded_image_size`. An image's size is read from its
        header first: more than `MAX_DECODE_PIXELS` is refused before decoding.

    Every limit, the rank and the channel count are checked inside the graph, so a request
    that breaks them fails with an `InvalidArgumentError` in any client, TF Serving's C++ one
    included, and never reaches a kernel that could abort the server.

    The version folder appears only when complete; an existing one needs `overwrite`.

    Args:
        model: the Keras model.
        base_dir: the model base folder TF Serving watches.
        model_name, version: the export goes to `<base_dir>/<model_name>/<version>`.
        encoded_image_size: `(H, W)` the `encoded` signature resizes decoded images to.
        overwrite: replace an existing version folder.

    Returns:
        The version folder, `<base_dir>/<model_name>/<version>`.

    Example (a few seconds)::

        export_saved_model(keras.models.load_model("model.keras"), "serving")
        # saved_model_cli run --dir serving/netvlad/1 --tag_set serve ...
    """
    frozen = constant_forward(model)
    height, width = encoded_image_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_pixels(images):
        return {"descriptor": frozen(tf.cast(_checked_pixels(images), tf.float32))[0]}

    def decode(encoded):
        checked = _checked_encoded(encoded)
        image = tf.io.decode_image(checked, channels=3, expand_animations=False)
        is_jpeg = tf.equal(tf.strings.substr(checked, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)
        orientation = tf.cond(is_jpeg, lambda: jpeg_orientation(checked), lambda: tf.constant(1))
        return tf.image.resize(tf.cast(upright(image, orientation), tf.float32), (height, width))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        decoded = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        return {"descriptor": frozen(decoded)[0]}

    module = tf.Module()
    module.serve_pixels, module.serve_encoded = serve_pixels, serve_encoded
    target = Path(base_dir) / model_name / str(int(version))
    with atomic_directory(target, overwrite) as staging:
        tf.saved_model.save(module, str(staging),
                            signatures={"serving_default": serve_pixels, "encoded": serve_encoded})
    return target


def _checked_pixels(images):
    """`images` once the graph has checked its rank, channels, sides and pixel count."""
    images = tf.ensure_shape(images, [None, None, None, 3])  # a run-time check, in the graph
    shape = tf.shape(images, out_type=tf.int64)
    sides = shape[1:3]
    checks = [
        tf.debugging.assert_greater_equal(tf.reduce_min(sides), tf.constant(MIN_IMAGE_SIDE, tf.int64),
                                          message=f"image sides must be at least {MIN_IMAGE_SIDE} pixels"),
        tf.debugging.assert_less_equal(tf.reduce_max(sides), tf.constant(MAX_PIXELS_IMAGE_SIDE, tf.int64),
                                       message=f"image sides must be at most {MAX_PIXELS_IMAGE_SIDE} pixels; "
                                               "downscale before sending"),
        tf.debugging.assert_less_equal(tf.reduce_prod(shape[:3]), tf.constant(MAX_PIXELS_PER_REQUEST, tf.int64),
                                       message=f"a request holds at most {MAX_PIXELS_PER_REQUEST} pixels; "
                                               "send fewer or smaller images"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _checked_encoded(encoded):
    """`encoded` once its header says JPEG or PNG of at most `MAX_DECODE_PIXELS` pixels."""
    is_png = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)
    known = tf.debugging.Assert(tf.logical_or(is_png, is_jpeg), ["images must be JPEG or PNG bytes"])

    def png_size():  # IHDR: width then height, big-endian, at byte 16
        whole = tf.debugging.assert_greater_equal(tf.strings.length(encoded), 24,
                                                  message="the PNG header is truncated")
        with tf.control_dependencies([whole]):
            ihdr = tf.strings.substr(encoded, 16, 8)
        header = tf.io.decode_raw(ihdr, tf.int32, little_endian=False)
        header = tf.ensure_shape(header, [2])
        return tf.cast(header[1], tf.int64), tf.cast(header[0], tf.int64)

    def jpeg_size():
        shape = tf.io.extract_jpeg_shape(encoded, output_type=tf.int64)  # headers only
        return shape[0], shape[1]

    with tf.control_dependencies([known]):
        image_height, image_width = tf.cond(is_png, png_size, jpeg_size)
    # Sides read as signed 32-bit: a negative one is a damaged or crafted header.
    positive = tf.debugging.assert_positive(tf.minimum(image_height, image_width),
                                            message="the image header gives no pixels")
    with tf.control_dependencies([positive]):
        small_enough = tf.debugging.assert_less_equal(
            image_height * image_width, tf.constant(MAX_DECODE_PIXELS, tf.int64),
            message=f"an encoded image holds at most {MAX_DECODE_PIXELS} pixels (its header says "
                    "more); downscale it before sending")
    with tf.control_dependencies([small_enough]):
        return tf.identity(encoded)


def verify_saved_model(path, model: keras.Model, images: np.ndarray) -> ParityReport:
    """Runs `serving_default` of the SavedModel on uint8 `images` `(B, H, W, 3)` and compares
    with the Keras model (bar: max abs diff ≤ 1e-5).

    Args:
        path: the exported artefact.
        model: the Keras model it came from.
        images: `(B, H, W, 3)` check images in 0–255, uint8.

    Returns:
        A `ParityReport` (size, max |Δ|, min cosine, latency, whether the bar is met).
    """
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    return measure_parity("saved_model", path, model, images,
                          lambda batch: serve(images=tf.constant(batch))["descriptor"].numpy(),
                          f"max|Δ| ≤ {SAVED_MODEL_MAX_ABS_DIFF:g}",
                          lambda max_abs_diff, _: max_abs_diff <= SAVED_MODEL_MAX_ABS_DIFF)
