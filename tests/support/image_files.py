"""Image files built byte by byte for tests: PNGs of any claimed size, JPEGs with EXIF orientation,
BMPs stored bottom-up or top-down."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of black pixels; a huge one compresses to a few hundred KB."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def photo_with_orientation(path, upright, orientation: int, quality: int = 95) -> None:
    """Saves `upright` (H, W, 3 uint8) the way a camera would with EXIF `orientation`: the
    pixels stored turned so that applying the orientation shows `upright`. JPEG or PNG
    (eXIf chunk) by the suffix; written by Pillow, the library most photo tools use."""
    from PIL import Image

    # Pillow's own inverse of each orientation's display transform.
    stored_from_upright = {
        1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
    }[orientation]
    image = Image.fromarray(upright)
    stored = image if stored_from_upright is None else image.transpose(stored_from_upright)
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": quality} if str(path).lower().endswith((".jpg", ".jpeg")) else {}
    stored.save(path, exif=exif.tobytes(), **options)


def bmp_bytes(pixels: np.ndarray, top_down: bool = False, info_size: int = 40) -> bytes:
    """A 24-bit BMP of `pixels` (H, W, 3) RGB, written by hand: rows bottom-up (or top-down with
    a negative height), BGR, each padded to 4 bytes. `info_size` < 40 fakes an OS/2 header."""
    height, width, _ = pixels.shape
    rows = pixels if top_down else pixels[::-1]
    padding = bytes((-3 * width) % 4)
    data = b"".join(row[:, ::-1].tobytes() + padding for row in rows)
    info = struct.pack("<IiiHHIIiiII", info_size, width, -height if top_down else height, 1, 24, 0,
                       len(data), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(data), 0, 0, 14 + len(info)) + info + data
