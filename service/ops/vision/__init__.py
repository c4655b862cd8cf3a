"""``/conv`` and ``/pool``: kernels, convolution, pooling, and pictures decoded under limits."""
