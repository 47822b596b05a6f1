"""The EXIF orientation of JPEG bytes, read inside a TensorFlow graph, so the SavedModel's
`encoded` signature turns photos upright as every other reader of the package does
(`netvlad_tf.data.images`). Only TensorFlow ops: it runs in TF Serving's C++ server.

The walk follows the JPEG markers from the start of the file to the APP1 "Exif" segment, then
the TIFF header's byte order and IFD0 to tag 0x0112 (EXIF 2.3, Sec. 4.6.4): at most
`MAX_SEGMENTS` segments and `MAX_IFD_ENTRIES` entries within the first `SEARCH_BYTES` bytes.
"""

from __future__ import annotations

import tensorflow as tf

SEARCH_BYTES = 1 << 16  # an APP1 segment is at most 64 KiB and comes before the image data
MAX_SEGMENTS = 32
MAX_IFD_ENTRIES = 256
ORIENTATION_TAG = 0x0112


def jpeg_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1–8) of one JPEG's bytes, 1 when it has none or it is damaged.

    Args:
        encoded: a scalar string tensor holding a JPEG file.

    Returns:
        A scalar int32 tensor.

    Example:
    >>> import io, PIL.Image
    >>> exif = PIL.Image.Exif()
    >>> exif[0x0112] = 6
    >>> buffer = io.BytesIO()
    >>> PIL.Image.new("RGB", (8, 4)).save(buffer, "JPEG", exif=exif.tobytes())
    >>> int(jpeg_orientation(tf.constant(buffer.getvalue())))
    6
    """
    data = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 0, SEARCH_BYTES), tf.uint8), tf.int32)
    size = tf.size(data)
    data = tf.concat([data, [0]], 0)  # never empty: a read past the end gathers this zero

    def byte(position):
        return tf.gather(data, tf.where((position >= 0) & (position < size), position, size))

    def u16(position, little):
        first, second = byte(position), byte(position + 1)
        return tf.where(little, first + 256 * second, 256 * first + second)

    def u32(position, little):
        low, high = u16(position, little), u16(position + 2, little)
        return tf.where(little, low + 65536 * high, 65536 * low + high)

    exif_mark = tf.constant([0x45, 0x78, 0x69, 0x66, 0, 0], tf.int32)  # "Exif\0\0"

    def next_segment(position, tiff, steps):
        marker = byte(position + 1)
        is_exif = (marker == 0xE1) & tf.reduce_all(
            tf.stack([byte(position + 4 + offset) for offset in range(6)]) == exif_mark)
        image_data = (marker == 0xDA) | (marker == 0xD9)  # start of scan, end of image: no EXIF
        tiff = tf.where(is_exif, position + 10, tf.where(image_data, -2, tiff))
        return position + 2 + u16(position + 2, False), tiff, steps + 1

    _, tiff, _ = tf.while_loop(
        lambda position, tiff, steps: (tiff == -1) & (steps < MAX_SEGMENTS) & (byte(position) == 0xFF),
        next_segment, (tf.constant(2), tf.constant(-1), tf.constant(0)))

    def orientation_in_tiff():
        little = byte(tiff) == 0x49  # "II": little-endian, "MM": big-endian
        directory = tiff + u32(tiff + 4, little)
        count = tf.minimum(u16(directory, little), MAX_IFD_ENTRIES)

        def next_entry(index, value):
            entry = directory + 2 + 12 * index
            value = tf.where(u16(entry, little) == ORIENTATION_TAG, u16(entry + 8, little), value)
            return index + 1, value

        _, value = tf.while_loop(lambda index, value: (index < count) & (value == 0), next_entry,
                                 (tf.constant(0), tf.constant(0)))
        return value

    value = tf.cond(tiff >= 0, orientation_in_tiff, lambda: tf.constant(0))
    return tf.where((value >= 1) & (value <= 8), value, 1)
