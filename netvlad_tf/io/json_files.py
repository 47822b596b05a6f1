"""Reading the package's small JSON files (manifests, places, metadata) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path, error: type[Exception] = ValueError) -> dict:
    """The JSON object in `path`.

    Args:
        path: the file.
        error: the exception raised for a file that is not valid JSON or not an object.

    Returns:
        The object as a dict.

    Raises:
        `error`: one line naming the file and what is wrong with it.

    Example (a list, `[1, 2]`, raises `ValueError: … must hold a JSON object, not list.`):
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "manifest.json"
    >>> _ = path.write_text(json.dumps({"num_rows": 3}))
    >>> read_json_object(path)["num_rows"]
    3
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem}).") from None
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object, not {type(value).__name__}.")
    return value
