"""An image file's size and EXIF orientation, read from its header without decoding it.

Knowing every image's size before decoding lets a folder of mixed sizes be batched by shape,
a photo far too large to decode be refused by name, and phone photos be turned upright: a
portrait photo is stored landscape with an EXIF orientation tag saying how to turn it
(JEITA CP-3451 "Exif", tag 0x0112), which TensorFlow's decoders ignore.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
BMP_SIGNATURE = b"BM"
# BITMAPINFOHEADER (Windows 3) and its longer successors: 32-bit width and height at byte 18.
_BMP_INFO_HEADER_SIZE = 40
ORIENTATION_TAG = 0x0112
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
_JPEG_START_OF_SCAN = 0xDA


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says.

    Attributes:
        height, width: the stored pixel grid.
        orientation: the EXIF orientation, 1 (upright, also when absent) to 8.
        is_jpeg: a JPEG, which can be decoded downscaled by 2, 4 or 8 in the DCT domain.
    """

    height: int
    width: int
    orientation: int = 1
    is_jpeg: bool = field(default=False, repr=False)

    @property
    def upright_size(self) -> tuple[int, int]:
        """`(height, width)` once turned upright: orientations 5–8 swap the sides."""
        return (self.width, self.height) if self.orientation >= 5 else (self.height, self.width)


def read_image_header(path) -> ImageHeader | None:
    """The size and orientation of the JPEG, PNG, GIF or BMP at `path` (the formats TensorFlow
    decodes); None for any other file. Only JPEG and PNG carry an EXIF orientation.

    GIF: the logical screen (the canvas every frame is drawn on, what the decoder returns),
    GIF89a spec §18. BMP: the info header's width and |height| (negative heights are stored
    top-down).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a header that is truncated or damaged (named).

    Example:
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> read_image_header(NORDLAND_DIR / "images/summer/images-04010.png")
    ImageHeader(height=32, width=64, orientation=1)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image {path} does not exist.")
    with open(path, "rb") as file:
        start = file.read(8)
        file.seek(0)
        try:
            if start.startswith(PNG_SIGNATURE):
                return _png_header(file)
            if start.startswith(JPEG_SIGNATURE):
                return replace(_jpeg_header(file), is_jpeg=True)
            if start.startswith(GIF_SIGNATURES):
                return _gif_header(file)
            if start.startswith(BMP_SIGNATURE):
                return _bmp_header(file)
        except (struct.error, ValueError) as error:
            raise ValueError(f"Cannot read image {path}: its header is damaged ({error}).") from None
    return None


def _read_exactly(file, count: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise ValueError("the file ends inside its header")
    return data


def _png_header(file) -> ImageHeader:
    file.seek(len(PNG_SIGNATURE))
    height = width = None
    orientation = 1
    while True:
        length, kind = struct.unpack(">I4s", _read_exactly(file, 8))
        if kind == b"IHDR":
            width, height = struct.unpack(">II", _read_exactly(file, 8))
            file.seek(length - 8 + 4, 1)
        elif kind == b"eXIf":
            orientation = tiff_orientation(_read_exactly(file, length))
            file.seek(4, 1)
        elif kind in (b"IDAT", b"IEND"):
            break
        else:
            file.seek(length + 4, 1)
    if height is None:
        raise ValueError("the PNG has no IHDR chunk")
    return ImageHeader(height, width, orientation)


def _jpeg_header(file) -> ImageHeader:
    file.seek(2)
    orientation = 1
    while True:
        if _read_exactly(file, 1) != b"\xff":
            raise ValueError("a JPEG segment does not start with a marker")
        marker = _read_exactly(file, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read_exactly(file, 1)[0]
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        (length,) = struct.unpack(">H", _read_exactly(file, 2))
        if length < 2:
            raise ValueError(f"a JPEG segment claims {length} bytes")
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">xHH", _read_exactly(file, 5))
            return ImageHeader(height, width, orientation)
        if marker == _JPEG_START_OF_SCAN:
            raise ValueError("the JPEG has no frame header before its data")
        segment = _read_exactly(file, length - 2)
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            orientation = tiff_orientation(segment[6:])


def _gif_header(file) -> ImageHeader:
    file.seek(6)
    width, height = struct.unpack("<HH", _read_exactly(file, 4))
    return ImageHeader(height, width)


def _bmp_header(file) -> ImageHeader:
    file.seek(14)
    (info_size,) = struct.unpack("<I", _read_exactly(file, 4))
    if info_size < _BMP_INFO_HEADER_SIZE:
        raise ValueError(f"its {info_size}-byte BMP info header is older than Windows 3 "
                         f"({_BMP_INFO_HEADER_SIZE} bytes), which TensorFlow's decoder misreads")
    width, height = struct.unpack("<ii", _read_exactly(file, 8))
    if width <= 0 or height == 0:
        raise ValueError(f"the BMP claims {width}×{height} pixels")
    return ImageHeader(abs(height), width)


def tiff_orientation(tiff: bytes) -> int:
    """The orientation tag of a TIFF/EXIF block's first directory; 1 when absent or damaged
    (a damaged EXIF block should not stop a photo from loading).

    Example:
    >>> block = b"MM\\x00\\x2a" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
    >>> block += bytes.fromhex("0112 0003 00000001 0006 0000") + bytes(4)
    >>> tiff_orientation(block)
    6
    """
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        magic, directory = struct.unpack(order + "HI", tiff[2:8])
        if magic != 42:
            return 1
        (count,) = struct.unpack(order + "H", tiff[directory : directory + 2])
        for entry in range(count):
            start = directory + 2 + 12 * entry
            tag, kind, _, value = struct.unpack(order + "HHI2s", tiff[start : start + 10])
            if tag == ORIENTATION_TAG and kind == 3:  # SHORT
                (orientation,) = struct.unpack(order + "H", value)
                return orientation if 1 <= orientation <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1
