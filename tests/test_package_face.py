"""The package face: the task's objects; an unknown name is an AttributeError."""

import warnings

import pytest

import netvlad_tf


def test_the_face_holds_the_tasks_objects_and_every_listed_name():
    for name in ("NetVLAD", "PlaceRecognitionModel", "PlaceIndex", "train", "evaluate", "embed_database",
                 "read_descriptors", "RankingLoss", "initialize_clusters", "with_learned_whitening", "LoopDetector"):
        assert name in netvlad_tf.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no listed name is a deprecated one
        assert all(getattr(netvlad_tf, name) is not None for name in netvlad_tf.__all__)
    assert callable(netvlad_tf.PlaceRecognitionModel.from_preset)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        netvlad_tf.nothing_here  # noqa: B018
