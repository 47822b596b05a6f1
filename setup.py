"""Packaging shim: the metadata is in pyproject.toml (`pip install .` reads it there)."""

from setuptools import setup

setup()
