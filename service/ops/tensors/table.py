"""The op table of ``/tensor/ops``: every op name of the request schema and its function."""

from __future__ import annotations

from service.ops.tensors.elementwise import ELEMENTWISE_OPS
from service.ops.tensors.factories import FACTORY_OPS
from service.ops.tensors.reductions import REDUCTION_OPS
from service.ops.tensors.runtime import OpFn
from service.ops.tensors.shapes import SHAPE_OPS

OPS: dict[str, OpFn] = {**FACTORY_OPS, **SHAPE_OPS, **ELEMENTWISE_OPS, **REDUCTION_OPS}
