"""``/benchmark``: the CPU-vs-GPU matrix multiply."""
