"""The model's forward pass as a graph with its weights folded in as constants."""

from __future__ import annotations

import keras
import tensorflow as tf

from netvlad_tf.models.keras_compat import convert_variables_to_constants_v2


def constant_forward(model: keras.Model, input_shape=(None, None, None, 3)):
    """A concrete function `float32 images → descriptors` whose weights are constants.

    Folding the weights in is what lets the SavedModel hold each weight once and load in TF Serving's own
    (TF1 session) loader: a Keras 3 model saved with `tf.saved_model.save` fails that loader
    (keras-team/keras#20096) and `model.export` stores every weight twice (keras-team/keras#23553).
    """
    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    return convert_variables_to_constants_v2(concrete)
