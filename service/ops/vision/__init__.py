"""``/conv`` and ``/pool``: kernels, convolution, pooling, and pictures decoded under limits.

- :mod:`~service.ops.vision.handlers`: each route's prepare (decode, plan, charge) and compute
- :mod:`~service.ops.vision.inputs`: the input as an ``[N, C, H, W]`` batch
- :mod:`~service.ops.vision.imageio`: pictures decoded safely (formats, pixel limit)
- :mod:`~service.ops.vision.kernels`: the preset kernels
- :mod:`~service.ops.vision.weights`: a request's weight (presets, seeded, explicit)
- :mod:`~service.ops.vision.conv`: convolution, planned on ``meta`` and run
- :mod:`~service.ops.vision.pool`: pooling, planned on ``meta`` and run
- :mod:`~service.ops.vision.functional`: what both share (pairs, torch's refusals as 422s)
"""
