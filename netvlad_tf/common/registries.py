"""The one way a table of named pieces (backbones, index kinds, converters) is filled."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Entry = TypeVar("Entry")


def registering(table: dict, key: str, what: str) -> Callable[[Entry], Entry]:
    """A decorator that puts what it decorates into `table` under `key`, refusing a second one.

    Args:
        table: the registry.
        key: the name the entry is found by.
        what: what the table holds, for the error (e.g. `"backbone"`).

    Example:
    >>> table = {}
    >>> @registering(table, "double", "function")
    ... def double(x):
    ...     return 2 * x
    >>> table["double"](4)
    8
    >>> registering(table, "double", "function")(double)
    Traceback (most recent call last):
    ...
    ValueError: A function 'double' is registered already.
    """

    def register(entry: Entry) -> Entry:
        if key in table:
            raise ValueError(f"A {what} {key!r} is registered already.")
        table[key] = entry
        return entry

    return register
