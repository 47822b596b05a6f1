"""What this CPU offers for int8 and bfloat16, printed beside every speed figure (the package's
`netvlad_tf.inference.hardware.describe_cpu`, under the name the benchmarks import)."""

from __future__ import annotations

from netvlad_tf.inference.hardware import describe_cpu as int8_capability

__all__ = ["int8_capability"]

if __name__ == "__main__":
    print(int8_capability())
