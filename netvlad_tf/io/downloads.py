"""Downloading a released file once into the Keras cache folder, resuming a broken download,
with a progress bar, and checking it before anything may use it.

The base address can be redirected to a mirror with the `NETVLAD_TF_MIRROR` environment
variable: a base URL under which the files keep their names (e.g.
`NETVLAD_TF_MIRROR=https://mirror.example.org/netvlad/` serves `…/Pitts30K_struct.mat`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from netvlad_tf.io.atomic_writes import atomic_directory, move_into_place
from netvlad_tf.io.progress import Progress

MIRROR_VARIABLE = "NETVLAD_TF_MIRROR"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
# A connection that drops is resumed this many times within one call.
ATTEMPTS = 4


def cache_folder() -> Path:
    """`$KERAS_HOME/netvlad_tf` (Keras' cache folder, `~/.keras` by default)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "netvlad_tf"


def file_url(url: str, file_name: str | None = None) -> str:
    """`url`, or `file_name` (default: the URL's last part) under `$NETVLAD_TF_MIRROR` when set.

    Example:
    >>> os.environ[MIRROR_VARIABLE] = "http://127.0.0.1:8000/files"
    >>> file_url("https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat")
    'http://127.0.0.1:8000/files/Pitts30K_struct.mat'
    >>> del os.environ[MIRROR_VARIABLE]
    """
    mirror = os.environ.get(MIRROR_VARIABLE)
    return f"{mirror.rstrip('/')}/{file_name or url.rsplit('/', 1)[-1]}" if mirror else url


def download(url: str, target, expected_bytes: int | None = None, sha256: str | None = None,
             verbose: bool = True) -> Path:
    """Downloads `url` (or its mirror, `file_url`) to `target` unless it is there already.

    A mirror serves the file under `target`'s name. The bytes go to `target.part` first; a broken download is resumed from there (an HTTP
    `Range` request; a server that ignores it starts the file again). The finished file must
    have `expected_bytes` and `sha256` (when given) or it is deleted; only then is it renamed
    to `target`, so `target` is always a whole, checked file.

    Args:
        url: the file's official address.
        target: where the file goes in the cache.
        expected_bytes: its published size.
        sha256: its published checksum.
        verbose: show a progress bar.

    Returns:
        `target`.

    Raises:
        ValueError: the server could not be reached or refused the file, or the file has the
            wrong size or checksum (one line naming the file; nothing is left in the cache).
    """
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    source = file_url(url, target.name)
    progress = Progress(expected_bytes, "byte", verbose, "downloading")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            total = _fetch(source, part, progress)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if isinstance(error, urllib.error.HTTPError) and error.code == 416 and part.is_file():
                total = part.stat().st_size  # the part was complete: nothing left to send
                break
            if isinstance(error, urllib.error.HTTPError) or attempt == ATTEMPTS:
                done = part.stat().st_size if part.is_file() else 0
                reason = getattr(error, "reason", None) or type(error).__name__
                raise ValueError(f"Downloading {source} stopped after {done:,} bytes ({reason}); run the same "
                                 f"call again to resume it, or set {MIRROR_VARIABLE} to a mirror.") from None
    _check(part, source, expected_bytes or total, sha256)
    move_into_place(part, target, overwrite=True)  # a file of the same checksum may have landed meanwhile
    return target


def _fetch(source: str, part: Path, progress) -> int | None:
    """Appends the rest of `source` to `part` (all of it when the server ignores `Range`);
    returns the file's total size when the server says it."""
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(source, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if done and response.status != 206:  # the whole file again
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        if total is not None:
            progress.total = total
        with open(part, "ab" if done else "wb") as file:
            while block := response.read(CHUNK_BYTES):
                file.write(block)
                done += len(block)
                progress.update(done)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)
    return total


def _check(path: Path, source: str, expected_bytes: int | None, sha256: str | None) -> None:
    size = path.stat().st_size
    problem = None
    if expected_bytes is not None and size != expected_bytes:
        problem = f"{size:,} bytes instead of {expected_bytes:,}"
    elif sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(CHUNK_BYTES), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            problem = f"SHA-256 {digest.hexdigest()[:12]}… instead of {sha256[:12]}…"
    if problem:
        path.unlink()
        raise ValueError(f"{source} gave a wrong file ({problem}); nothing was kept. Check the address "
                         f"or {MIRROR_VARIABLE}.")


def extract_zip(archive, folder) -> Path:
    """Unpacks a downloaded `.zip` into `folder` (atomically; kept when it exists already),
    refusing a member that would land outside it.

    Args:
        archive: the `.zip` file.
        folder: where its members go.

    Returns:
        `folder`.

    Raises:
        ValueError: a damaged archive or a member path outside `folder` (named).
    """
    folder = Path(folder)
    if folder.is_dir():
        return folder
    try:
        with zipfile.ZipFile(archive) as opened:
            for member in opened.namelist():
                if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                    raise ValueError(f"{archive}: member {member!r} would be written outside {folder}.")
            with atomic_directory(folder) as staging:
                opened.extractall(staging)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{archive} is not a valid zip archive ({error}).") from None
    return folder
