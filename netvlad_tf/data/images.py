"""The image policy of the whole package: how every command and function reads photos.

One policy, used by evaluate, index, query, cluster, pca, train, the demo, export calibration,
`PlaceIndex`, `embed_images` and the tuple datasets:

1. **Upright.** The EXIF orientation of a JPEG (APP1) or PNG (eXIf) is applied, so a portrait
   phone photo is embedded the way it is viewed.
2. **Size.** `image_size=(H, W)` resizes every image to exactly that size. Otherwise images keep
   their native size, downscaled (aspect ratio kept, never upscaled) so that the longer side is
   at most `max_side`, by default `DEFAULT_MAX_SIDE` = 640 pixels: the paper's scale
   (Pittsburgh and Tokyo Time Machine images are 640×480, the size the paper works at).
   `max_side=None` keeps native sizes uncapped. Bilinear.
3. **Mixed sizes.** Images are batched with others of the same final shape (a folder whose
   photos differ in size never fails to batch; a folder of one size batches as before).
4. **Limits and errors.** Sizes are read from the file headers (JPEG, PNG, GIF, BMP) before
   decoding. A JPEG over `MAX_DECODE_PIXELS` (phone cameras write 50–200 MP) is decoded
   downscaled by 2, 4 or 8 in the DCT domain (the least factor that brings it under the limit)
   and then sized as any other; any other image over the limit is refused by name before
   decoding, and an unreadable image or another format is named; a batch that fails for
   another reason (memory) is never blamed on an image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from netvlad_tf.common.tf_errors import short_tf_message
from netvlad_tf.io.image_header import read_image_header

DEFAULT_MAX_SIDE = 640
# The most pixels decoded at full size (8192×6144, a 50 MP phone photo: 150 MB of pixels).
MAX_DECODE_PIXELS = 50_331_648
# The DCT-domain downscaling factors of TensorFlow's JPEG decoder.
JPEG_RATIOS = (1, 2, 4, 8)


def resized_size(height: int, width: int, image_size: tuple[int, int] | None = None,
                 max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """The `(height, width)` an upright image of that size gets under the policy.

    Args:
        height, width: the upright image's size.
        image_size: `(H, W)` to resize to, or None.
        max_side: the longest side allowed without `image_size` (None: uncapped).

    Example:
    >>> resized_size(3000, 4000), resized_size(480, 640), resized_size(300, 400, (240, 320))
    ((480, 640), (480, 640), (240, 320))
    """
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    if max_side is None or max(height, width) <= max_side:
        return int(height), int(width)
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def upright(image: tf.Tensor, orientation) -> tf.Tensor:
    """Turns a decoded `(H, W, C)` image as its EXIF `orientation` (1–8) says.

    Example:
    >>> image = tf.reshape(tf.range(6), (2, 3, 1))
    >>> upright(image, 6)[..., 0].numpy().tolist()   # stored landscape, shown turned right
    [[3, 0], [4, 1], [5, 2]]
    """
    branches = [
        lambda: image,                                      # 1: as stored
        lambda: tf.image.flip_left_right(image),            # 2: mirrored
        lambda: tf.image.rot90(image, 2),                   # 3: upside down
        lambda: tf.image.flip_up_down(image),               # 4: mirrored upside down
        lambda: tf.image.transpose(image),                  # 5: mirrored, turned
        lambda: tf.image.rot90(image, 3),                   # 6: turn 90° clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7: mirrored, turned back
        lambda: tf.image.rot90(image, 1),                   # 8: turn 90° anticlockwise
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, branches)


def decode_ratio(height: int, width: int, is_jpeg: bool) -> int | None:
    """The factor an image of that stored size is decoded downscaled by: 1 up to
    `MAX_DECODE_PIXELS`; above it, for a JPEG, the least of 2, 4, 8 that brings it under; None
    when it cannot be decoded within the limit.

    Example:
    >>> [decode_ratio(h, w, True) for h, w in [(3000, 4000), (12000, 16000), (24000, 32000), (96000, 128000)]]
    [1, 2, 4, None]
    >>> decode_ratio(12000, 16000, False) is None
    True
    """
    for ratio in JPEG_RATIOS if is_jpeg else (1,):
        if -(-height // ratio) * -(-width // ratio) <= MAX_DECODE_PIXELS:
            return ratio
    return None


def _decode_resized(encoded, orientation, height, width, ratio=1) -> tf.Tensor:
    decoders = [lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False)] + [
        lambda factor=factor: tf.io.decode_jpeg(encoded, channels=3, ratio=factor) for factor in JPEG_RATIOS[1:]]
    index = tf.argmax(tf.cast(tf.equal(tf.constant(JPEG_RATIOS), tf.cast(ratio, tf.int32)), tf.int32))
    image = tf.switch_case(tf.cast(index, tf.int32), decoders)
    image = upright(image, orientation)
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.stack([height, width])))
    return tf.cond(same_size, lambda: tf.cast(image, tf.float32),
                   lambda: tf.image.resize(image, tf.stack([height, width])))


def resize_array(pixels, image_size: tuple[int, int] | None = None,
                 max_side: int | None = DEFAULT_MAX_SIDE) -> tf.Tensor:
    """An RGB array `(H, W, 3)` sized by the image policy, as a file would be read: float32,
    resized (plain bilinear, like every image the package reads) only when the size changes.

    Example:
    >>> tuple(resize_array(np.zeros((32, 64, 3)), (16, 32)).shape)
    (16, 32, 3)
    """
    pixels = tf.convert_to_tensor(np.asarray(pixels, np.float32))
    if pixels.shape.rank != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"An image must be an RGB array (H, W, 3), got shape {tuple(pixels.shape)}.")
    size = resized_size(int(pixels.shape[0]), int(pixels.shape[1]), image_size, max_side)
    return pixels if size == tuple(pixels.shape[:2]) else tf.image.resize(pixels, size)


def image_plan(paths: Sequence, image_size=None, max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Every image's EXIF orientation and final `(height, width)`, from its header.

    Args:
        paths: image files.
        image_size: `(H, W)` to resize every image to; None keeps native sizes.
        max_side: without `image_size`, the longest side allowed (downscaling only; None: uncapped).

    Returns:
        `orientations` `(N,)` int32, `sizes` `(N, 2)` int32 and the JPEG decode `ratios`
        `(N,)` int32 (`decode_ratio`).

    Raises:
        FileNotFoundError: a missing image (named).
        ValueError: an image whose header is damaged, or that is not a JPEG and has more than
            `MAX_DECODE_PIXELS` pixels (named).
    """
    orientations = np.ones(len(paths), np.int32)
    sizes = np.zeros((len(paths), 2), np.int32)
    ratios = np.ones(len(paths), np.int32)
    for index, path in enumerate(paths):
        header = read_image_header(path)
        if header is None:
            raise ValueError(f"Cannot read image {path}: not a JPEG, PNG, GIF or BMP file.")
        orientations[index] = header.orientation
        native = header.upright_size
        ratio = decode_ratio(header.height, header.width, header.is_jpeg)
        if ratio is None:
            kind = "a JPEG, even decoded at 1/8," if header.is_jpeg else "not a JPEG (only JPEGs decode downscaled) and"
            raise ValueError(
                f"Image {path} has {native[0]}×{native[1]} pixels and is {kind} over the "
                f"{MAX_DECODE_PIXELS:,} (50 MP) netvlad_tf decodes; downscale it first."
            )
        ratios[index] = ratio
        decoded = (-(-native[0] // ratio), -(-native[1] // ratio))
        sizes[index] = resized_size(*(native if ratio == 1 else decoded), image_size=image_size, max_side=max_side)
    return orientations, sizes, ratios


def _decode_file(path, ratio: int = 1) -> tf.Tensor:
    try:
        encoded = tf.io.read_file(str(path))
        if ratio > 1:
            return tf.io.decode_jpeg(encoded, channels=3, ratio=ratio)
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(f"Cannot read image {path}: not a valid JPEG, PNG, GIF or BMP image "
                         f"({short_tf_message(error)}).") from None


def load_image(path, image_size: tuple[int, int] | None = None,
               max_side: int | None = DEFAULT_MAX_SIDE) -> tf.Tensor:
    """Reads one image as float32 RGB in 0–255, `(H, W, 3)`, upright and sized by the policy
    (see this module's docstring).

    Args:
        path: a JPEG, PNG, GIF or BMP file.
        image_size: `(H, W)` to resize to exactly; wins over `max_side`.
        max_side: the longest side allowed (downscaling only), None for native size.

    Example:
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> tuple(load_image(NORDLAND_DIR / "images/summer/images-04010.png", (128, 256)).shape)
    (128, 256, 3)
    """
    orientations, sizes, ratios = image_plan([path], image_size, max_side)
    try:
        return _decode_resized(tf.io.read_file(str(path)), orientations[0], *sizes[0], ratios[0])
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(f"Cannot read image {path}: not a valid JPEG, PNG, GIF or BMP image "
                         f"({short_tf_message(error)}).") from None


def shape_batches(sizes: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of at most `batch_size` images that share one size, in order of first
    appearance; with one size throughout they are plain consecutive batches.

    Example:
    >>> [b.tolist() for b in shape_batches(np.array([[4, 6], [6, 4], [4, 6], [4, 6]]), 2)]
    [[0, 2], [3], [1]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(index)
    return [np.array(members[start : start + batch_size])
            for members in groups.values() for start in range(0, len(members), batch_size)]


def image_dataset(paths: Sequence, image_size=None, max_side: int | None = DEFAULT_MAX_SIDE,
                  batch_size: int = 8) -> tf.data.Dataset:
    """A prefetched `tf.data` dataset of `(indices, images)`: batches of images that share a
    shape (see `shape_batches`), with the positions in `paths` they hold.

    Args:
        paths: image files.
        image_size: `(H, W)` to resize every image to; None keeps native sizes.
        max_side: without `image_size`, the longest side allowed (downscaling only; None: uncapped).
        batch_size: images per batch.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).query_paths[:3]
    >>> indices, images = next(iter(image_dataset(paths, (64, 128))))
    >>> indices.numpy().tolist(), images.shape
    ([0, 1, 2], TensorShape([3, 64, 128, 3]))
    """
    paths = [str(path) for path in paths]
    orientations, sizes, ratios = image_plan(paths, image_size, max_side)
    batches = shape_batches(sizes, batch_size)
    order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    lengths = [len(batch) for batch in batches]
    ragged = lambda values: tf.RaggedTensor.from_row_lengths(values, lengths)
    dataset = tf.data.Dataset.from_tensor_slices((
        ragged(tf.constant(order, tf.int64)),
        ragged(tf.constant([paths[i] for i in order], tf.string)),
        ragged(tf.constant(orientations[order])),
        ragged(tf.constant(ratios[order])),
        tf.constant(sizes[[batch[0] for batch in batches]] if batches else np.zeros((0, 2), np.int32)),
    ))

    return dataset.map(_load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


@tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string),
                              tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32),
                              tf.TensorSpec([2], tf.int32)])
def _load_batch(indices, batch_paths, batch_orientations, batch_ratios, size):
    """Decodes one batch of `image_dataset`. Traced once per process: a function traced anew for
    every dataset (a closure) stays in TensorFlow's function library, about 7 MB a dataset, so
    embedding grew with the number of shards."""
    images = tf.map_fn(
        lambda item: _decode_resized(tf.io.read_file(item[0]), item[1], size[0], size[1], item[2]),
        (batch_paths, batch_orientations, batch_ratios),
        fn_output_signature=tf.TensorSpec((None, None, 3), tf.float32),
    )
    return indices, images


def unreadable_images(paths: Sequence[str]) -> list[str]:
    """The paths among `paths` that are missing or do not decode as an image."""
    return [str(path) for path in paths if image_problem(path) is not None]


def image_problem(path) -> str | None:
    """Why `path` cannot be read under the image policy (missing, damaged, another format, too
    large), as a one-line message naming it; None when it decodes.

    Example:
    >>> image_problem("gone.jpg")
    'Image gone.jpg does not exist.'
    """
    try:
        _, _, ratios = image_plan([path], max_side=None)
        _decode_file(path, int(ratios[0]))
    except (ValueError, FileNotFoundError) as error:
        return str(error)
    return None


def indexed_image_batches(paths: Sequence, image_size=None, max_side: int | None = DEFAULT_MAX_SIDE,
                          batch_size: int = 8, unreadable: dict[int, str] | None = None,
                          ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields `(indices, images)` NumPy batches of `paths` under the image policy: images of
    one shape per batch, `indices` their positions in `paths`.

    Args:
        paths: image files.
        image_size: `(H, W)` to resize every image to; None keeps native sizes.
        max_side: without `image_size`, the longest side allowed (downscaling only; None: uncapped).
        batch_size: images per batch.
        unreadable: None stops at the first image that cannot be read; a dict skips such
            images instead, recording each one's position with the reason (`image_problem`).
            A file whose header reads but whose pixels do not is found when its batch fails:
            the images not yet yielded are then checked one by one and the rest read again.

    Raises:
        ValueError: an image that is missing, damaged or too large, named (without
            `unreadable`); or a batch that failed for another reason (e.g. memory), saying so
            without blaming an image.

    Example:
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> paths = sorted(str(p) for p in (NORDLAND_DIR / "images/summer").glob("*.png"))[:2] + ["gone.png"]
    >>> skipped = {}
    >>> [indices.tolist() for indices, _ in indexed_image_batches(paths, (32, 48), unreadable=skipped)]
    [[0, 1]]
    >>> skipped
    {2: 'Image gone.png does not exist.'}
    """
    paths = [str(path) for path in paths]
    if unreadable is None:
        for indices, images, error in _batches_until_error(paths, image_size, max_side, batch_size):
            if error is None:
                yield indices, images
                continue
            problem = next(filter(None, map(image_problem, paths)), None)
            raise ValueError(problem or f"Reading a batch of images failed: {short_tf_message(error)}") from None
        return
    pending = []
    for position, path in enumerate(paths):
        try:
            image_plan([path], image_size, max_side)
            pending.append(position)
        except (ValueError, FileNotFoundError) as error:
            unreadable[position] = str(error)
    while pending:
        yielded: set[int] = set()
        for indices, images, error in _batches_until_error([paths[i] for i in pending], image_size,
                                                           max_side, batch_size):
            if error is None:
                positions = np.asarray(pending, np.int64)[indices]
                yielded.update(positions.tolist())
                yield positions, images
                continue
            left = [position for position in pending if position not in yielded]
            problems = {position: image_problem(paths[position]) for position in left}
            bad = {position: problem for position, problem in problems.items() if problem}
            if not bad:
                raise ValueError(f"Reading a batch of images failed: {short_tf_message(error)}") from None
            unreadable.update(bad)
            pending = [position for position in left if position not in bad]
            break
        else:
            return


def _batches_until_error(paths: list[str], image_size, max_side, batch_size):
    """`(indices, images, None)` per batch of `image_dataset`, then `(None, None, error)` once
    if a batch fails to decode; memory exhaustion is a `ValueError` saying what to lower."""
    iterator = iter(image_dataset(paths, image_size, max_side, batch_size))
    while True:
        try:
            indices, images = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            yield None, None, error
            return
        except tf.errors.ResourceExhaustedError as error:
            raise ValueError(f"Out of memory reading a batch of {batch_size} images; lower the batch "
                             f"size or --max_side ({short_tf_message(error)}).") from None
        yield indices.numpy(), images.numpy(), None


def image_batches(paths: Sequence, image_size=None, max_side: int | None = DEFAULT_MAX_SIDE,
                  batch_size: int = 8) -> Iterator[np.ndarray]:
    """Yields NumPy image batches of `paths` under the image policy. With `image_size` (or
    images of one size) the batches follow the order of `paths`; otherwise images are grouped
    by shape: use `indexed_image_batches` where the order matters.

    Args:
        paths: image files.
        image_size: `(H, W)` to resize every image to; None keeps native sizes.
        max_side: without `image_size`, the longest side allowed (downscaling only; None: uncapped).
        batch_size: images per batch.

    Example:
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> paths = sorted((NORDLAND_DIR / "images/summer").glob("*.png"))[:5]
    >>> [batch.shape for batch in image_batches(paths, (32, 48), batch_size=4)]
    [(4, 32, 48, 3), (1, 32, 48, 3)]
    """
    for _, images in indexed_image_batches(paths, image_size, max_side, batch_size):
        yield images
