"""What this CPU offers for int8 and bfloat16, printed beside every speed figure."""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flags: x86 int8 dot products (VNNI), bfloat16, and ARM's dot-product extension.
_CAPABILITY_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx2", "asimddp")


def int8_capability() -> str:
    """E.g. `"x86_64: avx512_vnni avx512_bf16 avx2"`, `"x86_64: AVX2 only (no VNNI)"`,
    `"aarch64: asimddp (ARM dotprod)"`."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{machine}: unknown (no /proc/cpuinfo)"
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    found = [flag for flag in _CAPABILITY_FLAGS if flag in flags]
    if found == ["avx2"]:
        return f"{machine}: AVX2 only (no VNNI, no BF16)"
    if "asimddp" in found:
        return f"{machine}: asimddp (ARM dotprod)"
    return f"{machine}: {' '.join(found) or 'no AVX2/VNNI/dotprod'}"


if __name__ == "__main__":
    print(int8_capability())
