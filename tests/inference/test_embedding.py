"""The one batched-inference loop: rows land where their indices say, compiled or eager, and
match a NumPy forward pass."""

import keras
import numpy as np
import pytest

from netvlad_tf.inference.embedding import array_batches, predict_all, predict_batches


def two_output_model(rng):
    inputs = keras.Input((4,))
    first = keras.layers.Dense(3, name="first")(inputs)
    second = keras.layers.Dense(2, activation="relu", name="second")(inputs)
    model = keras.Model(inputs, [first, second])
    for layer in (model.get_layer("first"), model.get_layer("second")):
        kernel, bias = layer.get_weights()
        layer.set_weights([rng.normal(size=kernel.shape), rng.normal(size=bias.shape)])
    return model


def numpy_forward(model, inputs):
    (w1, b1), (w2, b2) = model.get_layer("first").get_weights(), model.get_layer("second").get_weights()
    return [inputs @ w1 + b1, np.maximum(inputs @ w2 + b2, 0)]


@pytest.mark.parametrize("run_eagerly", [False, True])
@pytest.mark.parametrize("batch_size", [2, 7])  # several batches, one batch
def test_rows_follow_their_indices_and_match_numpy(run_eagerly, batch_size):
    rng = np.random.default_rng(0)
    model = two_output_model(rng)
    model.run_eagerly = run_eagerly
    inputs = rng.normal(size=(7, 4)).astype(np.float32)
    order = rng.permutation(7)
    batches = [(order[start:start + batch_size], inputs[order[start:start + batch_size]])
               for start in range(0, 7, batch_size)]
    first, second = predict_all(model, batches, 7, verbose=False)
    expected_first, expected_second = numpy_forward(model, inputs)
    np.testing.assert_allclose(first, expected_first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, expected_second, rtol=1e-5, atol=1e-5)


def test_batches_of_a_memory_mapped_array(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "features.npy", rng.normal(size=(5, 4)).astype(np.float16))
    stored = np.load(tmp_path / "features.npy", mmap_mode="r")
    model = two_output_model(rng)
    first, _ = predict_all(model, array_batches(stored, 2), 5, verbose=False)
    np.testing.assert_allclose(first, numpy_forward(model, stored.astype(np.float32))[0], rtol=1e-5, atol=1e-5)
    yielded = [indices.tolist() for indices, _ in predict_batches(model, array_batches(stored, 2), 5, verbose=False)]
    assert yielded == [[0, 1], [2, 3], [4]]


def test_nothing_to_run_is_an_error():
    with pytest.raises(ValueError, match="No inputs"):
        predict_all(two_output_model(np.random.default_rng(2)), [], 0, verbose=False)


@pytest.mark.slow  # a fresh process
def test_a_model_built_under_a_strategy_gives_one_row_per_input():
    """Keras' predict_on_batch returns every row once per replica under MirroredStrategy; the
    loop must not. Run in a subprocess: the two logical CPUs are fixed when TensorFlow starts."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from netvlad_tf.inference.embedding import predict_all
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        inputs = np.arange(12, dtype="float32").reshape(3, 4)
        kernel, bias = model.layers[0].get_weights()
        batches = [(np.array([0, 1]), inputs[:2]), (np.array([2]), inputs[2:])]
        np.testing.assert_allclose(predict_all(model, batches, 3, verbose=False), inputs @ kernel + bias,
                                   rtol=1e-5, atol=1e-5)
        with strategy.scope():  # where fit's callbacks (the cache refresh) run
            np.testing.assert_allclose(predict_all(model, batches, 3, verbose=False), inputs @ kernel + bias,
                                       rtol=1e-5, atol=1e-5)
        print("ONE ROW PER INPUT")
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "ONE ROW PER INPUT" in completed.stdout, completed.stderr[-3000:]


def test_the_compiled_forward_pass_does_not_keep_the_model_alive():
    import gc
    import weakref

    model = two_output_model(np.random.default_rng(3))
    batches = [(np.array([0]), np.ones((1, 4))), (np.array([1]), np.ones((1, 4)))]
    predict_all(model, batches, 2, verbose=False)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
