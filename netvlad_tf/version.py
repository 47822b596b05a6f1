"""The package's version (read by the packaging metadata, model cards and preset folders)."""

__version__ = "0.1.0"
