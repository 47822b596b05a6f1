"""Reading a MATLAB `.mat` file (v5/v7) with one clear error for any damaged one."""

from __future__ import annotations

import os
import struct
import zlib

import scipy.io
import scipy.io.matlab

# What scipy's reader raises on truncated, empty or garbled files (it has no error of its own).
_DAMAGED_FILE_ERRORS = (scipy.io.matlab.MatReadError, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError,
                        EOFError, OverflowError, MemoryError, UnicodeDecodeError, struct.error, zlib.error)


class MatV73Error(ValueError):
    """A MATLAB v7.3 (HDF5) file: scipy reads v5/v7 only."""


def load_mat(path: str | os.PathLike, description: str, **options) -> dict:
    """`scipy.io.loadmat(path, **options)`, with errors that name the file.

    Args:
        path: the `.mat` file.
        description: what the file should be, for messages ("MatConvNet model").
        **options: passed to `scipy.io.loadmat` (e.g. `squeeze_me=True`).

    Returns:
        The variables, as `scipy.io.loadmat` returns them.

    Raises:
        FileNotFoundError: no such file.
        MatV73Error: a v7.3 (HDF5) file.
        ValueError: an empty, truncated or otherwise damaged file.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.mat"
    >>> _ = path.write_bytes(b"")
    >>> load_mat(path, "dbStruct file")
    Traceback (most recent call last):
    ...
    ValueError: dbStruct file '...empty.mat' is empty or not a MATLAB .mat file (...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{description} {path!r} does not exist.")
    try:
        return scipy.io.loadmat(path, **options)
    except NotImplementedError as error:  # scipy's answer to v7.3 files
        raise MatV73Error(f"{description} {path!r} is a MATLAB v7.3 (HDF5) file.") from error
    except _DAMAGED_FILE_ERRORS as error:
        detail = f"{type(error).__name__}: {error}".strip().rstrip(":")
        if os.path.getsize(path) == 0 or "mat file appears to be empty" in str(error).lower():
            raise ValueError(f"{description} {path!r} is empty or not a MATLAB .mat file ({detail}).") from None
        raise ValueError(f"{description} {path!r} is truncated or damaged: not a readable MATLAB .mat "
                         f"file ({detail}).") from None
