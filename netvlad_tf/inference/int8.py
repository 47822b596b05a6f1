"""int8 inference on ONNX Runtime (`pip install 'netvlad_tf[int8]'`): the model exported to ONNX,
its backbone convolutions statically quantised (QDQ, per-channel weights, uint8 activations, each
convolution's ReLU folded into its output's range) with ranges calibrated on images of the
database being embedded, then their biases corrected on the same images
(`netvlad_tf.inference.bias_correction`). The weights are int8 where
the CPU multiplies int8 without saturating (VNNI, AMX, ARM), uint8 on an x86 CPU without VNNI
(`hardware.int8_products_saturate`; on the demo's model cosine to float32 0.78 → 0.986).

The runtime was chosen by measurement (`benchmarks/bench_precision.py`): on a CPU with VNNI,
ONNX Runtime's int8 kernels ran VGG16 + NetVLAD at 240×320 3.65× its own float32; on an
AVX2-only CPU (no VNNI) ONNX Runtime and OpenVINO 2026.4 both ran the quantised model at the
speed of their float32 (1.52 and 1.55 images/s against 1.60 and 1.58), so int8 pays only where
the CPU has int8 dot-product units. The pooling and whitening head stays float32 (as in the
int8 TFLite), and so do the layers of `netvlad_tf.backbones.float_layers`.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.backbones.float_layers import embedding_float_layers
from netvlad_tf.data.images import DEFAULT_MAX_SIDE, image_problem, indexed_image_batches
from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.inference.bias_correction import correct_biases
from netvlad_tf.inference.hardware import describe_cpu, int8_products_saturate
from netvlad_tf.inference.onnx_files import onnx_runtime_session, require_onnx_packages, write_onnx
from netvlad_tf.io.atomic_writes import atomic_file

INT8_EXTRA_HINT = "--precision=int8 runs on ONNX Runtime: pip install 'netvlad_tf[int8]'."
# Images the activation ranges are calibrated on, and images held back for the parity check.
CALIBRATION_IMAGES = 32
PARITY_IMAGES = 8
# The least cosine between an int8 and a float32 descriptor of a held-back image. Recall moves
# when near neighbours swap; on unit vectors a cosine c moves a descriptor by √(2 − 2c), 0.14 at
# 0.99, a tenth of the distance between unrelated images (√2), and the measured int8 models
# reach 0.9998 (random VGG16 weights at 240×320): a model under 0.99 is miscalibrated.
INT8_MIN_COSINE = 0.99
# The activations a quantised convolution's output quantisation absorbs (ReLU6 is a Clip in ONNX).
ACTIVATIONS = ("Relu", "Clip")
# A convolution's output channel whose largest weight is under this fraction of the layer's largest
# is quantised as zeros (`quantize_onnx`). It moves the channel's output by under 1e-5 of what the
# layer's strongest channel can reach, against the 1/255 of its range 8-bit activations resolve;
# the demo's overflowing channels were all under 2e-6.
DEAD_CHANNEL = 1e-5


class OnnxRuntimeModel:
    """An `.onnx` model (here: quantised by `quantize_int8`) run by ONNX Runtime on the CPU,
    called like the Keras model it came from: `(B, H, W, 3)` RGB images in 0–255 → `(B, dim)`
    descriptors (NumPy float32).

    Args:
        path: the quantised model (`quantize_int8`).
        name: what to call it in messages.

    Raises:
        ValueError: its weights are int8 (quantised on a CPU with VNNI) and this CPU's int8
            products saturate (`hardware.int8_products_saturate`): its descriptors would be wrong.
    """

    run_eagerly = False

    def __init__(self, path, name: str | None = None):
        require_onnx_packages(INT8_EXTRA_HINT)
        self.name = name or Path(path).stem
        self.onnx_bytes = Path(path).read_bytes()  # kept to save it elsewhere (a place index)
        if int8_products_saturate() and _has_signed_weights(self.onnx_bytes):
            raise ValueError(f"{path} has int8 weights, quantised for a CPU that multiplies int8 exactly (VNNI); "
                             f"this CPU ({describe_cpu()}) saturates their products, so its descriptors would be "
                             "wrong. Embed or build again here with --precision=int8, or use float32.")
        self._session = onnx_runtime_session(self.onnx_bytes)
        self._input = self._session.get_inputs()[0].name

    def __call__(self, inputs, training: bool = False) -> np.ndarray:
        return self._session.run(None, {self._input: np.asarray(inputs, np.float32)})[0]


def quantize_int8(model: keras.Model, calibration_paths: Sequence[str], path, image_size=None,
                  max_side: int | None = DEFAULT_MAX_SIDE, overwrite: bool = False, verbose: bool = False) -> Path:
    """Writes `model` as an int8 ONNX model calibrated on `calibration_paths` (read by the image
    policy, one at a time), its head and float layers kept float32, its quantised convolutions'
    biases corrected on the first `bias_correction.BIAS_CORRECTION_IMAGES` of them (`quantize_onnx`).

    Args:
        model: a `PlaceRecognitionModel` (its `backbone` names the layers to quantise).
        calibration_paths: images like those it will embed (e.g. spread over the database).
        path: the `.onnx` file to write (atomically).
        image_size, max_side: the image policy of the images it will embed.
        overwrite: replace an existing file.
        verbose: show the bias correction's progress.

    Returns:
        `path`.
    """
    require_onnx_packages(INT8_EXTRA_HINT)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(f"--precision=int8 needs a netvlad_tf PlaceRecognitionModel, not a Keras {type(model).__name__}.")
    images = [batch for _, batch in indexed_image_batches(list(calibration_paths), image_size, max_side, batch_size=1)]
    with tempfile.TemporaryDirectory() as work:
        float_path, prepared = Path(work) / "float.onnx", Path(work) / "prepared.onnx"
        write_onnx(model, float_path)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        with atomic_file(path, overwrite) as staging:
            quantize_onnx(prepared, staging, images, _float_nodes(prepared, backbone), verbose)
    return Path(path)


def quantize_onnx(float_path: Path, path: Path, images: Sequence[np.ndarray], float_nodes: Sequence[str] = (),
                  verbose: bool = False) -> None:
    """Quantises a float ONNX model's convolutions (and the ReLU/ReLU6 after them) to int8 with
    ONNX Runtime: QDQ, per-channel weights, uint8 activations calibrated on `images`, biases then
    corrected on them (`bias_correction.correct_biases`).

    A convolution's output channel whose weights are all under `DEAD_CHANNEL` of the layer's
    largest (batch normalisation scaled it away) is quantised as exact zeros first: its
    per-channel weight scale would be so small that the bias, quantised at input scale × weight
    scale, overflows int32 and is clipped (the demo's model had 18 such channels).

    Args:
        float_path: the float model, prepared by ONNX Runtime's `quant_pre_process`; not changed.
        path: the QDQ model to write.
        images: calibration batches, as fed to the model's one input.
        float_nodes: names of nodes to leave float.
        verbose: show the bias correction's progress.

    Example (`quantize_int8` runs it on a model's export):
    >>> images = [np.random.default_rng(0).uniform(0, 255, (1, 480, 640, 3)).astype(np.float32)]  # doctest: +SKIP
    >>> quantize_onnx(Path("prepared.onnx"), Path("int8.onnx"), images)  # doctest: +SKIP

    Reference: Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018, §2 (the affine scheme ONNX Runtime's QDQ
    implements); Nagel et al., ICCV 2019, §4.2 (the bias correction).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self, input_name, batches):
            self.input_name, self.batches = input_name, iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {self.input_name: batch}

    weight_type = QuantType.QUInt8 if int8_products_saturate() else QuantType.QInt8
    model = onnx.load(str(float_path))
    _zero_dead_channels(model, float_nodes)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory() as work:
        cleaned = Path(work) / "dead_channels_zeroed.onnx"
        onnx.save(model, str(cleaned))
        # A quantised convolution's ReLU/ReLU6 is folded into its output's quantisation, whose
        # range is then the activation's (0–6, not the convolution's): on the demo's model the
        # median cosine to float32 went from 0.9952 to 0.9973.
        quantize_static(str(cleaned), str(path), Images(input_name, images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=weight_type,
                        op_types_to_quantize=["Conv", *ACTIVATIONS], nodes_to_exclude=list(float_nodes))
        correct_biases(float_path, path, images, verbose=verbose)


def _zero_dead_channels(model, float_nodes: Sequence[str]) -> None:
    """Sets to zero, in the ONNX `model` itself, the dead output channels (`DEAD_CHANNEL`) of its
    convolutions outside `float_nodes`."""
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in float_nodes or node.input[1] not in initializers:
            continue
        tensor = initializers[node.input[1]]
        weights = numpy_helper.to_array(tensor)
        largest = np.abs(weights).reshape(len(weights), -1).max(axis=1)
        dead = largest < DEAD_CHANNEL * largest.max()
        if dead.any():
            tensor.CopyFrom(numpy_helper.from_array(np.where(dead[:, None, None, None], 0, weights).astype(weights.dtype),
                                                    tensor.name))


def _has_signed_weights(onnx_bytes: bytes) -> bool:
    """Whether a quantised model's convolution weights (4-D initializers) are int8."""
    import onnx

    return any(tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) == 4
               for tensor in onnx.load_model_from_string(onnx_bytes).graph.initializer)


def _float_nodes(onnx_path: Path, backbone: keras.Model) -> list[str]:
    """The ONNX nodes that stay float32: outside the backbone (the head), in its float layers, and
    activations not directly after a quantised convolution.

    A node is placed by its name and, for a convolution, the names of its weights and bias:
    the exporter renames a convolution fused with its batch normalisation `Conv__N`, and only
    its parameters keep the Keras layer's name.
    """
    import onnx

    prefixes = embedding_float_layers(backbone, "int8")
    nodes = onnx.load(str(onnx_path)).graph.node
    float_nodes = set()
    for node in nodes:
        names = [node.name, *node.input[1:]] if node.op_type == "Conv" else [node.name]
        in_backbone = any(f"/{backbone.name}" in name for name in names)
        if not in_backbone or any(f"/{prefix}" in name for name in names for prefix in prefixes):
            float_nodes.add(node.name)
    producers = {output: node for node in nodes for output in node.output}
    for node in nodes:  # an activation is quantised with its convolution, or not at all
        if node.op_type in ACTIVATIONS:
            source = producers.get(node.input[0])
            if source is None or source.op_type != "Conv" or source.name in float_nodes:
                float_nodes.add(node.name)
    return [node.name for node in nodes if node.name in float_nodes]


def calibrated_int8_model(model: keras.Model, paths: Sequence[str], path, image_size=None,
                          max_side: int | None = DEFAULT_MAX_SIDE, verbose: bool = True) -> OnnxRuntimeModel:
    """Quantises `model` to int8 calibrated on images spread evenly over `paths` and checks it on
    others held back: the int8 model, or a one-line refusal when its descriptors stray.

    Args:
        model: the float32 `PlaceRecognitionModel`.
        paths: the images to be embedded (the database); unreadable ones are passed over.
        path: where the int8 `.onnx` is kept (reused when it exists: a resumed run keeps its
            calibration; removed when it fails the check).
        image_size, max_side: the image policy.
        verbose: print the parity line and the bias correction's progress.

    Raises:
        ValueError: the int8 descriptors' cosine to float32 falls under `INT8_MIN_COSINE` on a
            held-back image, or ONNX Runtime is not installed.
    """
    from netvlad_tf.inference.embedding import embed_images

    path = Path(path)
    spread = evenly_spaced(list(paths), 4 * (CALIBRATION_IMAGES + PARITY_IMAGES))
    # Decoded until enough are found, not all the candidates.
    readable = list(itertools.islice((p for p in spread if image_problem(p) is None),
                                     CALIBRATION_IMAGES + PARITY_IMAGES))
    if len(readable) < 2:
        raise ValueError("int8 calibration needs readable images; found fewer than 2 among the database's.")
    held_back = readable[1::(CALIBRATION_IMAGES + PARITY_IMAGES) // PARITY_IMAGES][:PARITY_IMAGES]
    calibration = [p for p in readable if p not in held_back]
    if not path.is_file():
        quantize_int8(model, calibration, path, image_size, max_side, verbose=verbose)
    int8 = OnnxRuntimeModel(path, name=f"{model.name}_int8")
    reference = embed_images(model, held_back, image_size, max_side, batch_size=1, verbose=False)
    low = embed_images(int8, held_back, image_size, max_side, batch_size=1, verbose=False)
    cosine = float(np.min(np.sum(reference * low, axis=1)))
    if cosine < INT8_MIN_COSINE:
        path.unlink()
        raise ValueError(f"The int8 model's descriptors stray from float32 (least cosine {cosine:.4f} over "
                         f"{len(held_back)} held-back images, under {INT8_MIN_COSINE}); use --precision=float32 "
                         "or bfloat16.")
    if verbose:
        print(f"int8 parity: least cosine to float32 {cosine:.5f} over {len(held_back)} held-back images "
              f"(bar {INT8_MIN_COSINE})", flush=True)
    return int8
