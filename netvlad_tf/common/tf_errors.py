"""TensorFlow's error messages, shortened to what a user can act on."""

from __future__ import annotations

import re

import tensorflow as tf

_GRAPH_NOISE = re.compile(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]")


def short_tf_message(error: tf.errors.OpError) -> str:
    """The first meaningful line of a TF error, without `{{function_node …}}`, `[[node …]]` or
    `[Op:…]` decorations and "Graph execution error" headers.

    Example:
    >>> error = tf.errors.InvalidArgumentError(None, None, "{{function_node __inference_f_12}} "
    ...                                        "Input is empty. [[{{node DecodePng}}]] [Op:IteratorGetNext]")
    >>> short_tf_message(error)
    'Input is empty.'
    """
    for line in str(getattr(error, "message", error)).splitlines():
        line = " ".join(_GRAPH_NOISE.sub(" ", line).split()).strip(" :")
        if line and not line.startswith(("Graph execution error", "Detected at node", "<stack traces")):
            return line
    return type(error).__name__
