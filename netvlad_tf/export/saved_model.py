"""SavedModel export for TF Serving: `<base>/<model_name>/<version>/` with two signatures."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.export.freezing import frozen_forward
from netvlad_tf.export.parity import ParityReport, compare_descriptors
from netvlad_tf.staging import atomic_directory

# The `encoded` signature resizes every decoded image to this size (bilinear) so that a batch
# of photos of different sizes can be stacked; Pittsburgh and Tokyo images are 480×640.
DEFAULT_ENCODED_IMAGE_SIZE = (480, 640)
SAVED_MODEL_MAX_ABS_DIFF = 1e-5


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
        `serving_default`: `images` uint8 `(B, H, W, 3)`, any H and W → `descriptor` `(B, dim)`.
        `encoded`: `images` string `(B,)` of JPEG/PNG bytes → `descriptor`; each image is
        decoded to RGB and resized to `encoded_image_size`. Bytes that are not an image make
        the request fail with an `InvalidArgumentError`.

    The version folder appears only when complete; an existing one needs `overwrite`.

    Returns:
        The version folder, `<base_dir>/<model_name>/<version>`.

    Example (a few seconds)::

        export_saved_model(keras.models.load_model("model.keras"), "serving")
        # saved_model_cli run --dir serving/netvlad/1 --tag_set serve ...
    """
    frozen = frozen_forward(model)
    height, width = encoded_image_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_pixels(images):
        return {"descriptor": frozen(tf.cast(images, tf.float32))[0]}

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), (height, width))

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


def verify_saved_model(path, model: keras.Model, images: np.ndarray) -> ParityReport:
    """Runs `serving_default` of the SavedModel on uint8 `images` `(B, H, W, 3)` and compares
    with the Keras model (bar: max abs diff ≤ 1e-5)."""
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    reference = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    serve(images=tf.constant(images[:1]))
    start = time.perf_counter()
    exported = serve(images=tf.constant(images))["descriptor"].numpy()
    latency_ms = 1000 * (time.perf_counter() - start) / len(images)
    max_abs_diff, cosine = compare_descriptors(reference, exported)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return ParityReport("saved_model", str(path), size, max_abs_diff, cosine, latency_ms,
                        f"max|Δ| ≤ {SAVED_MODEL_MAX_ABS_DIFF:g}", max_abs_diff <= SAVED_MODEL_MAX_ABS_DIFF)
