"""``/tensor/ops``: a program of tensor steps, planned on ``meta`` and then run.

:mod:`~service.ops.tensors.program` (plan, run, warm up) over the
:mod:`~service.ops.tensors.interpreter` and the op table in :mod:`~service.ops.tensors.table`
(:mod:`~service.ops.tensors.factories`, :mod:`~service.ops.tensors.shapes`,
:mod:`~service.ops.tensors.elementwise`, :mod:`~service.ops.tensors.reductions`);
:mod:`~service.ops.tensors.indexing` parses NumPy-style index text;
:mod:`~service.ops.tensors.handlers` is the route's prepare and compute.
"""
