"""Request builders for a model served by TF Serving (REST and gRPC)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np


def rest_encoded_request(encoded_images: Sequence[bytes]) -> dict:
    """JSON body for `POST /v1/models/<name>:predict` on the `encoded` signature.

    Example:
    >>> rest_encoded_request([b"\\x89PNG..."])
    {'signature_name': 'encoded', 'instances': [{'b64': 'iVBORy4uLg=='}]}
    """
    return {
        "signature_name": "encoded",
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in encoded_images],
    }


def rest_pixels_request(images: np.ndarray) -> dict:
    """JSON body for the `serving_default` signature: uint8 images `(B, H, W, 3)`.

    Example:
    >>> rest_pixels_request(np.zeros((1, 1, 1, 3), np.uint8))
    {'signature_name': 'serving_default', 'instances': [[[[0, 0, 0]]]]}
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}.")
    return {"signature_name": "serving_default", "instances": images.tolist()}


def grpc_encoded_request(encoded_images: Sequence[bytes], model_name: str = "netvlad"):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for the `encoded` signature.

    Needs `tensorflow-serving-api`; install it with `pip install --no-deps
    tensorflow-serving-api` beside tensorflow-cpu, or it pulls in a second TensorFlow.

    Example (needs tensorflow-serving-api)::

        request = grpc_encoded_request([open("photo.jpg", "rb").read()])
        response = stub.Predict(request, timeout=10.0)
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "encoded"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(encoded_images), dtype=tf.string))
    return request
