"""What this machine offers for low-precision inference: CPU flags and GPUs."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# /proc/cpuinfo flags: x86 bfloat16 and int8 dot products (AVX-512, AMX, AVX-VNNI), and ARM's
# dot-product extension.
CAPABILITY_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx2", "asimddp")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from `/proc/cpuinfo` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def describe_cpu(flags: frozenset[str] | None = None) -> str:
    """The CPU's low-precision capability, printed beside every speed figure: e.g.
    `"x86_64: avx512_vnni avx512_bf16 avx2"` or `"x86_64: AVX2 only (no VNNI, no BF16)"`.

    Example:
    >>> describe_cpu(frozenset({"avx2", "fma"})).split(": ")[1]
    'AVX2 only (no VNNI, no BF16)'
    """
    machine = platform.machine()
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return f"{machine}: unknown (no /proc/cpuinfo)"
    found = [flag for flag in CAPABILITY_FLAGS if flag in flags]
    if found == ["avx2"]:
        return f"{machine}: AVX2 only (no VNNI, no BF16)"
    if "asimddp" in found:
        return f"{machine}: asimddp (ARM dotprod)"
    return f"{machine}: {' '.join(found) or 'no AVX2/VNNI/dotprod'}"


def int8_products_saturate(flags: frozenset[str] | None = None) -> bool:
    """Whether int8 × uint8 products would saturate here: an x86 CPU without VNNI multiplies them
    with `vpmaddubsw`, whose 16-bit pair sums clip (ONNX Runtime's quantization notes). On the
    demo's Lite0 model that alone dropped the int8 descriptors' cosine to float32 to 0.78.

    Example:
    >>> int8_products_saturate(frozenset({"avx2", "fma"})), int8_products_saturate(frozenset({"avx2", "avx512_vnni"}))
    (True, False)
    """
    flags = cpu_flags() if flags is None else flags
    return "avx2" in flags and not any(flag in flags for flag in INT8_FLAGS)


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees (empty on a CPU-only machine or build)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]
