"""A saved model whose patches depend on the image: the tiny backbone with a fixed soft assignment."""

import pytest

from tests.support.tiny_backbone import clustered_tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    clustered_tiny_model().save(path)
    return path
