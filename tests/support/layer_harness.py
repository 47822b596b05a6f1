"""A keras-hub style harness: every layer passes the same serialization and training checks."""

from __future__ import annotations

import keras
import numpy as np


def check_layer(layer_class, init_kwargs: dict, input_data: np.ndarray, tmp_path) -> None:
    """Config round trip, symbolic + eager calls, `.keras` round trip and one `fit` step."""
    layer = layer_class(**init_kwargs)
    eager_output = keras.ops.convert_to_numpy(layer(input_data))

    config = layer.get_config()
    for name, value in init_kwargs.items():
        assert config[name] == value, f"get_config lost {name}"
    rebuilt = layer_class.from_config(config)
    assert rebuilt.get_config() == config

    symbolic_input = keras.Input(shape=input_data.shape[1:])
    symbolic_output = layer(symbolic_input)
    assert tuple(symbolic_output.shape) == (None, *eager_output.shape[1:])
    assert tuple(layer.compute_output_shape((None, *input_data.shape[1:]))) == (
        None,
        *eager_output.shape[1:],
    )

    model = keras.Model(symbolic_input, symbolic_output)
    path = tmp_path / f"{layer_class.__name__}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    reloaded_layer = reloaded.layers[-1]
    assert type(reloaded_layer) is layer_class
    np.testing.assert_allclose(reloaded.predict(input_data, verbose=0), eager_output, atol=1e-6)

    trainable_before = [np.array(w) for w in reloaded.trainable_weights]
    targets = np.random.default_rng(0).normal(size=eager_output.shape).astype("float32")
    reloaded.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = reloaded.fit(input_data, targets, epochs=1, batch_size=len(input_data), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    if trainable_before:
        changed = [
            not np.allclose(before, after)
            for before, after in zip(trainable_before, reloaded.trainable_weights)
        ]
        assert any(changed), "one fit step changed no trainable weight"
