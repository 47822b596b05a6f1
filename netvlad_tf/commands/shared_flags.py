"""Flags and parsing shared by several `netvlad-tf` commands."""

from __future__ import annotations

from absl import flags

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.inference.precision import PRECISIONS
from netvlad_tf.layers.whitening import DEFAULT_WHITENING_METHOD, WHITENING_METHODS
from netvlad_tf.reranking.reranker import DEFAULT_RERANK_TOP_K
from netvlad_tf.reranking.settings import PATCH_SETTINGS


def define_dataset_flags(fv: flags.FlagValues, name: str = "dataset", required_help: str = "") -> None:
    """`--<name>`: a dataset CSV, an authors\' `.mat` file or a VPR-benchmark folder.

    Args:
        fv: the command's flag values.
        name: the flag's name (e.g. `"validation"` for a second dataset).
        required_help: text put before the help, e.g. `"Required. "`.
    """
    flags.DEFINE_string(
        name, None,
        f"{required_help}A dataset CSV (split,image_path,easting,northing), an authors' dbStruct "
        ".mat file (with --image_root) or a VPR-benchmark folder (with --split).",
        flag_values=fv,
    )


def define_dataset_location_flags(fv: flags.FlagValues) -> None:
    """`--image_root`, `--query_root` and `--split`: where a dataset\'s images are."""
    flags.DEFINE_string("image_root", None, "Image folder of a .mat dataset.", flag_values=fv)
    flags.DEFINE_string("query_root", None, "Query image folder of a .mat dataset, if not --image_root.", flag_values=fv)
    flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split of a VPR-benchmark folder.", flag_values=fv)


def define_image_size_flag(fv: flags.FlagValues, default: str | None, with_max_side: bool = True) -> None:
    """`--image_size` and, unless `with_max_side` is false, `--max_side` (the image policy of
    `netvlad_tf.data.images`).

    Args:
        fv: the command's flag values.
        default: `--image_size`'s default, `"HEIGHT,WIDTH"` or None (native sizes).
        with_max_side: also define `--max_side` (commands that need one size for every image
            do not).
    """
    flags.DEFINE_string(
        "image_size", default,
        "Resize every image to HEIGHT,WIDTH (e.g. 480,640); unset keeps native sizes, capped by --max_side.",
        flag_values=fv,
    )
    if with_max_side:
        flags.DEFINE_integer(
            "max_side", DEFAULT_MAX_SIDE,
            f"Without --image_size: downscale photos whose longer side is over this many pixels "
            f"(aspect ratio kept; the paper's scale is {DEFAULT_MAX_SIDE}); 0 keeps native sizes uncapped.",
            flag_values=fv,
        )


def define_whitening_flag(fv: flags.FlagValues) -> None:
    """`--whitening`: how PCA whitening scales its principal directions (`fit_pca_whitening`)."""
    flags.DEFINE_enum("whitening", DEFAULT_WHITENING_METHOD, list(WHITENING_METHODS),
                      "How principal directions are scaled: authors (the paper's 1/sqrt(lambda)), shrinkage "
                      "(1/sqrt(lambda + mean lambda): for fewer training images than dimensions) or none "
                      "(PCA only).", flag_values=fv)


def define_dims_flag(fv: flags.FlagValues) -> None:
    """`--dims`: keep the first D PCA-whitened dimensions (`PlaceRecognitionModel.with_dims`)."""
    flags.DEFINE_integer("dims", None, "Keep the first D whitened dimensions and L2-normalise again (the authors' "
                         "cropToDim; e.g. 128–512 for loop closure and SfM); the model needs PCA whitening.",
                         lower_bound=1, flag_values=fv)


# `--rerank` value that keeps the global ranking.
NO_RERANK = "none"


def define_precision_flag(fv: flags.FlagValues, default: str | None = "float32") -> None:
    """`--precision`: the number format images are embedded in (`netvlad_tf.inference.precision`)."""
    flags.DEFINE_enum("precision", default, list(PRECISIONS), "float32; bfloat16 or float16 (the backbone in 16 bits, "
                      "the NetVLAD head in float32); int8 (ONNX Runtime, calibrated on the database: pip install "
                      "'netvlad_tf[int8]'); auto: the fastest this machine runs without calibration (one line says "
                      "which).", flag_values=fv)


def define_rerank_flags(fv: flags.FlagValues) -> None:
    """`--rerank` and `--rerank_top_k`: Patch-NetVLAD re-ranking of the global candidates."""
    flags.DEFINE_enum("rerank", NO_RERANK, [NO_RERANK, *sorted(PATCH_SETTINGS)],
                      "Re-rank each query's top candidates by matching the model's patch descriptors with a spatial "
                      "check (Patch-NetVLAD): performance (patch sizes 2, 5, 8, RANSAC: pip install "
                      "'netvlad_tf[rerank]'), speed (size 5, 512 dims, rapid spatial scoring) or storage (size 5, "
                      "128 dims).", flag_values=fv)
    flags.DEFINE_integer("rerank_top_k", DEFAULT_RERANK_TOP_K, "Candidates re-ranked per query (with --rerank).",
                         lower_bound=1, flag_values=fv)


def none_or_text(text: str | None) -> str | None:
    """A flag value where the word `none` (any case) means None, e.g. `--weights=none`.

    Example:
    >>> none_or_text("None"), none_or_text("imagenet")
    (None, 'imagenet')
    """
    return None if text is None or text.lower() == "none" else text


def image_policy(fv: flags.FlagValues) -> tuple[tuple[int, int] | None, int | None]:
    """`(image_size, max_side)` from `--image_size` and `--max_side` (0 → None: uncapped)."""
    if fv.max_side < 0:
        raise ValueError(f"--max_side must be 0 (native size) or a number of pixels, got {fv.max_side}.")
    return parse_image_size(fv.image_size), fv.max_side or None


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """`"480,640"` → `(480, 640)`; None stays None.

    Example:
    >>> parse_image_size("240,320")
    (240, 320)
    """
    if text is None:
        return None
    try:
        height, width = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--image_size must be HEIGHT,WIDTH such as 480,640, got {text!r}.") from None
    if height < 16 or width < 16:
        raise ValueError(f"--image_size {text!r} is too small: the stride-16 backbones need at least 16×16 pixels.")
    return height, width


def parse_numbers(values: list[str], name: str, kind: type, example: str) -> list:
    """A list flag's values as numbers of `kind`, or a ValueError naming the flag.

    Example:
    >>> parse_numbers(["1", "5"], "ns", int, "1,5,10")
    [1, 5]
    >>> parse_numbers(["a"], "ns", int, "1,5,10")
    Traceback (most recent call last):
    ...
    ValueError: --ns must be numbers such as 1,5,10; got ['a'].
    """
    try:
        return [kind(value) for value in values]
    except ValueError:
        raise ValueError(f"--{name} must be numbers such as {example}; got {values}.") from None


def require_flags(fv: flags.FlagValues, *names: str) -> None:
    """Raises a ValueError naming the flags among `names` that were not given.

    Example:
    >>> fv = flags.FlagValues()
    >>> _ = flags.DEFINE_string("output", None, "Where to write.", flag_values=fv)
    >>> _ = fv(["prog"])
    >>> require_flags(fv, "output")
    Traceback (most recent call last):
    ...
    ValueError: Missing required flag: --output.
    """
    missing = [f"--{name}" for name in names if fv[name].value is None]
    if missing:
        raise ValueError(f"Missing required flag{'s' if len(missing) > 1 else ''}: {', '.join(missing)}.")


def require_keras_output(path: str) -> None:
    """`--output` of a command that saves a model must name a `.keras` file."""
    if not path.endswith(".keras"):
        raise ValueError(f"--output must end in .keras, got {path!r}.")
