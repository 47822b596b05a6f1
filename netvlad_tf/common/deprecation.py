"""Old spellings of renamed arguments, kept for one release with a `DeprecationWarning`.

Every rename is listed in CHANGELOG.md with the release that removes the old spelling.
"""

from __future__ import annotations

import warnings
from typing import Any

# The release that drops the deprecated spellings.
REMOVED_IN = "0.3"


def renamed_argument(function: str, old_name: str, old_value: Any, new_name: str, new_value: Any,
                     unset: Any = None) -> Any:
    """The value of an argument renamed from `old_name` to `new_name`.

    Args:
        function: the function's name, for the messages.
        old_name, old_value: the old spelling and what the caller gave it (`unset`: nothing).
        new_name, new_value: the new spelling and what the caller gave it.
        unset: the default both spellings have.

    Returns:
        `old_value` (with a `DeprecationWarning`) when only the old spelling was given, else
        `new_value`.

    Raises:
        TypeError: both spellings were given.

    Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_argument("f", "size", 3, "image_size", None)
    3
    >>> str(caught[0].message)
    'f(size=) is deprecated and will be removed in 0.3; use image_size= instead.'
    """
    if old_value is unset:
        return new_value
    if new_value is not unset:
        raise TypeError(f"{function}() got both {new_name}= and its deprecated spelling {old_name}=; "
                        f"give {new_name}= only.")
    warnings.warn(f"{function}({old_name}=) is deprecated and will be removed in {REMOVED_IN}; use "
                  f"{new_name}= instead.", DeprecationWarning, stacklevel=3)
    return old_value
