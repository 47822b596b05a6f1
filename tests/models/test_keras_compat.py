"""The private Keras and TensorFlow names netvlad_tf hooks (`netvlad_tf.models.keras_compat`)
still exist with the signatures its workarounds were written for: a Keras release that renames
one fails here, in the fast tier, not silently in training."""

import inspect

import pytest

from netvlad_tf.models import keras_compat
from netvlad_tf.models.model import PlaceRecognitionModel


def test_every_hooked_private_name_holds():
    assert keras_compat.missing_hooks() == []


def test_the_override_matches_the_method_it_replaces():
    trainer = keras_compat.keras_trainer_with("_maybe_symbolic_build")
    ours = inspect.signature(keras_compat.MultiWorkerFit._maybe_symbolic_build)
    assert list(ours.parameters) == list(inspect.signature(trainer._maybe_symbolic_build).parameters)
    assert PlaceRecognitionModel.__mro__.index(keras_compat.MultiWorkerFit) < PlaceRecognitionModel.__mro__.index(trainer)


def test_a_renamed_hook_is_reported(monkeypatch):
    """The canary itself can fail: hide the hooked method as a Keras release renaming it would."""
    monkeypatch.delattr(keras_compat.keras_trainer_with("_maybe_symbolic_build"), "_maybe_symbolic_build")
    assert keras_compat.missing_hooks() == ["keras Model._maybe_symbolic_build is gone"]


@pytest.mark.parametrize("version, expected", [("3.15.1", True), ("3.16.0", False)])
def test_the_pinned_keras_range_is_the_checked_one(version, expected):
    from pathlib import Path

    import tomllib
    from packaging.specifiers import SpecifierSet

    dependencies = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    keras_range = next(SpecifierSet(line[len("keras"):]) for line in dependencies if line.startswith("keras"))
    assert (version in keras_range) is expected
