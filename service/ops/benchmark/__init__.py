"""``/benchmark``: the CPU-vs-GPU matrix multiply timed (:mod:`~service.ops.benchmark.matmul`)
and the route's prepare and compute (:mod:`~service.ops.benchmark.handlers`)."""
