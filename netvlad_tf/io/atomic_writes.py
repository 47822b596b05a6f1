"""The one way netvlad_tf writes an output: all of it appears, or none of it, and nothing is
replaced unless asked.

Every file and folder the package itself writes (models, exports, indices, descriptor shards,
results, plots) is written under a hidden staging name beside its target (same file system,
so the final rename is atomic) and renamed onto the target only when complete. The exceptions
are Keras' own training callbacks inside a run folder: `ModelCheckpoint` (`best.keras`),
`TensorBoard` (`logs/`) and `BackupAndRestore` (`backup/`) write in place, as Keras writes them
(`last.keras` is written by `train` itself, atomically); a run killed mid-save is resumed from
`backup/`.

- an existing target is refused unless `overwrite`, both before the work starts and again at
  the rename (a no-replace rename, so of two runs writing one target exactly one succeeds and
  the other says why);
- with `overwrite` the old target is swapped out in one atomic step, so a run killed while
  saving in place leaves the old file intact;
- staging entries of runs that were killed are removed by the next write to the same target;
- files and folders get the permissions the user's umask gives, like any other file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

# A staging entry is `.{target name}.{pid}-{token}.staging{target suffix}`; the pid tells
# whether the run that made it is still alive.
STAGING_MARK = ".staging"
# renameat2 flags (linux/fs.h).
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def refuse_existing(target, overwrite: bool) -> None:
    """Raises FileExistsError if `target` exists and `overwrite` is false.

    Call it before long work so a run fails at once rather than after hours; the writers check
    again when they commit.

    Example:
    >>> refuse_existing("/", overwrite=False)
    Traceback (most recent call last):
    ...
    FileExistsError: / exists; choose another path or pass --overwrite.
    """
    target = Path(target)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise FileExistsError(f"{target} exists; choose another path or pass --overwrite.")


@contextlib.contextmanager
def atomic_directory(target, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; on success it becomes `target`, on any
    error (or a kill) nothing is left at `target`.

    Args:
        target: the folder to produce.
        overwrite: replace an existing `target` (atomically) instead of refusing it.

    Raises:
        FileExistsError: `target` exists (when the block starts or when it is committed) and
            `overwrite` is false.

    Example:
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_directory(root / "out") as staging:
    ...     _ = (staging / "a.txt").write_text("done")
    >>> (root / "out" / "a.txt").read_text()
    'done'
    """
    with _staged(Path(target), overwrite, make=lambda path: path.mkdir(0o777)) as staging:
        yield staging


@contextlib.contextmanager
def atomic_file(target, overwrite: bool = False) -> Iterator[Path]:
    """Yields a staging path beside `target` with the same suffix (Keras checks `.keras`) for
    the caller to write; on success it is renamed onto `target`, on any error it is removed.

    Args:
        target: the file to produce.
        overwrite: replace an existing `target` (atomically) instead of refusing it.

    Raises:
        FileExistsError: `target` exists (when the block starts or when it is committed) and
            `overwrite` is false.

    Example:
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.txt"
    >>> with atomic_file(target) as staging:
    ...     _ = staging.write_text("weights")
    >>> target.read_text()
    'weights'
    """
    with _staged(Path(target), overwrite, make=lambda path: None) as staging:
        yield staging


def write_bytes_atomically(target, data: bytes, overwrite: bool = False) -> Path:
    """Writes `data` to `target` through `atomic_file`; returns `target` as a Path.

    Args:
        target: the file to produce.
        data: its bytes.
        overwrite: replace an existing `target`.

    Example:
    >>> import pathlib, tempfile
    >>> path = write_bytes_atomically(pathlib.Path(tempfile.mkdtemp()) / "a.bin", b"ok")
    >>> path.read_bytes()
    b'ok'
    """
    target = Path(target)
    with atomic_file(target, overwrite) as staging:
        staging.write_bytes(data)
    return target


def save_model_atomically(model, target, overwrite: bool = False) -> Path:
    """`model.save(target)` through `atomic_file`: a kill mid-save never leaves a partial or
    empty `.keras` file, and an existing file is replaced only with `overwrite`.

    Args:
        model: the Keras model.
        target: the `.keras` file to produce.
        overwrite: replace an existing `target` (atomically, also when it is the file the
            model was loaded from).

    Example:
    >>> import keras, pathlib, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = save_model_atomically(model, pathlib.Path(tempfile.mkdtemp()) / "m.keras")
    >>> path.name
    'm.keras'
    """
    target = Path(target)
    with atomic_file(target, overwrite) as staging:
        model.save(staging)
    return target


def remove_stale_staging(target) -> list[Path]:
    """Removes the staging entries of `target` left by runs that are no longer alive.

    Returns:
        The removed paths.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    prefix = f".{target.name}."
    for entry in target.parent.iterdir():
        if not entry.name.startswith(prefix) or STAGING_MARK not in entry.name:
            continue
        pid_text = entry.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            _remove(entry)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def _staged(target: Path, overwrite: bool, make) -> Iterator[Path]:
    refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.with_name(
        f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{STAGING_MARK}{target.suffix}"
    )
    make(staging)
    try:
        yield staging
        if not (staging.exists() or staging.is_symlink()):
            raise FileNotFoundError(f"Nothing was written for {target}.")
        move_into_place(staging, target, overwrite)
    except BaseException:
        _remove(staging)
        raise


def move_into_place(staging: Path, target: Path, overwrite: bool = False) -> None:
    """Renames a finished `staging` file or folder onto `target`, the last step of every write:
    refused (FileExistsError, nothing replaced) when `target` exists unless `overwrite`, else
    swapped in atomically. Also the last step of a download, whose resumable `.part` file
    (`netvlad_tf.io.downloads`) keeps its name across runs instead of a staging name."""
    if not overwrite:
        try:
            _rename_no_replace(staging, target)
        except FileExistsError:
            raise FileExistsError(
                f"{target} appeared while this run was writing it (another run?); nothing was "
                "replaced. Choose another path or pass --overwrite."
            ) from None
        return
    if staging.is_file() and not target.is_dir():
        os.replace(staging, target)  # atomic for files
        return
    if target.exists() or target.is_symlink():
        if _renameat2(staging, target, _RENAME_EXCHANGE):
            _remove(staging)  # now holds the old target
            return
        aside = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{STAGING_MARK}.old")
        os.rename(target, aside)
        os.rename(staging, target)
        _remove(aside)
        return
    os.rename(staging, target)


def _rename_no_replace(source: Path, target: Path) -> None:
    """Renames, failing with FileExistsError if `target` exists, with no window in between."""
    if _renameat2(source, target, _RENAME_NOREPLACE):
        return
    if source.is_file():
        os.link(source, target)  # fails if target exists
        os.unlink(source)
        return
    # Folders without renameat2: claim the name with mkdir (atomic), then replace the empty claim.
    os.mkdir(target)
    os.rename(source, target)


_LIBC = None


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux renameat2; True if done, False where the system lacks it. Raises on other errors."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name, use_errno=True) if name else False
        except OSError:
            _LIBC = False
    function = getattr(_LIBC, "renameat2", None) if _LIBC else None
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # kernel or file system without it
    raise OSError(code, os.strerror(code), str(target))


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
