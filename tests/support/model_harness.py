"""A keras-hub style harness for whole models: every `PlaceRecognitionModel` variant passes the
same checks (config round trip, `.keras` round trip in safe mode, one tuple `train_step` on the
reloaded object against the NumPy loss, SavedModel export parity)."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf import PlaceRecognitionModel, RankingLoss
from netvlad_tf.export.saved_model import export_saved_model

NUM_NEGATIVES = 2
MARGIN = 0.1


def as_json(config: dict):
    """A config as its JSON form: a reloaded one holds lists where the original held tuples."""
    return json.loads(json.dumps(config, default=str))


def tuple_batch(image_size, batch: int = 2, seed: int = 0) -> dict:
    """A batch of `batch` tuples (query, one positive, two negatives) of integer RGB images."""
    rng = np.random.default_rng(seed)
    shape = (*image_size, 3)
    return {
        "query": rng.integers(0, 256, (batch, *shape)).astype("float32"),
        "positives": rng.integers(0, 256, (batch, 1, *shape)).astype("float32"),
        "negatives": rng.integers(0, 256, (batch, NUM_NEGATIVES, *shape)).astype("float32"),
        "positive_mask": np.ones((batch, 1), "float32"),
        "negative_mask": np.ones((batch, NUM_NEGATIVES), "float32"),
    }


def numpy_ranking_loss(query, positives, negatives, margin: float = MARGIN) -> float:
    """Eq. 7 of the paper with the authors' normalisation, written out: the hinge of the
    nearest positive against every negative, summed, over the number of violating triplets."""
    nearest = ((positives - query[:, None]) ** 2).sum(-1).min(1)
    hinge = np.maximum(nearest[:, None] + margin - ((negatives - query[:, None]) ** 2).sum(-1), 0.0)
    return float(hinge.sum() / max((hinge > 0).sum(), 1))


def check_model(model: PlaceRecognitionModel, image_size, tmp_path) -> None:
    """Runs every check on `model`; `image_size` is `(H, W)` of the test images."""
    images = tuple_batch(image_size)["query"]
    expected = model.predict(images, verbose=0)
    assert expected.shape == (len(images), model.descriptor_dim)

    # Config round trip: the rebuilt model with the same weights gives the same descriptors.
    rebuilt = PlaceRecognitionModel.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), expected, atol=1e-6)

    # .keras round trip, safe mode: the reloaded object is the same class with the same output.
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is PlaceRecognitionModel
    assert as_json(reloaded.get_config()) == as_json(model.get_config())
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)

    # One tuple step on the reloaded object: its loss is the NumPy formula on the descriptors
    # before the step, and the step moves the trainable weights.
    batch = tuple_batch(image_size, seed=1)
    describe = lambda x: reloaded.predict(x.reshape(-1, *x.shape[-3:]), verbose=0).reshape(*x.shape[:-3], -1)  # noqa: E731
    expected_loss = numpy_ranking_loss(describe(batch["query"]), describe(batch["positives"]),
                                       describe(batch["negatives"]))
    reloaded.compile(optimizer=keras.optimizers.SGD(1.0), loss=RankingLoss(margin=MARGIN))
    before = [np.array(weight) for weight in reloaded.trainable_weights]
    logs = reloaded.train_on_batch(batch, return_dict=True)
    assert abs(logs["loss"] - expected_loss) <= 1e-5 * max(1.0, expected_loss), (logs["loss"], expected_loss)
    if expected_loss > 0:
        assert any(not np.allclose(b, np.array(a)) for b, a in zip(before, reloaded.trainable_weights)), \
            "one train_step changed no trainable weight"

    # SavedModel export: TF Serving's signature gives the Keras descriptors.
    export_dir = export_saved_model(model, tmp_path / "serving", model_name=model.name)
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant(images.astype(np.uint8)))
    np.testing.assert_allclose(served["descriptor"].numpy(), expected, atol=1e-5)
