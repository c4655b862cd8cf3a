"""How ``/tensor/ops`` ops read their arguments, and the op table's parts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from service.codec import DTYPES
from service.errors import LimitExceeded, TensorDecodeError
from service.ops.tensors.arguments import dims_arg, dtype_arg, size_arg
from service.ops.tensors.elementwise import ELEMENTWISE_OPS
from service.ops.tensors.factories import FACTORY_OPS
from service.ops.tensors.reductions import REDUCTION_OPS
from service.ops.tensors.runtime import Context
from service.ops.tensors.shapes import SHAPE_OPS
from service.ops.tensors.table import OPS

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_dtype_arg_reads_every_wire_name(name: str) -> None:
    assert dtype_arg({"dtype": name}) is DTYPES[name]
    assert dtype_arg({"to": name}, "to") is DTYPES[name]


@pytest.mark.parametrize("args", [{}, {"dtype": None}])
def test_dtype_arg_absent_is_none(args: dict[str, Any]) -> None:
    assert dtype_arg(args) is None


def test_dtype_arg_unknown_is_refused() -> None:
    with pytest.raises(TensorDecodeError):
        dtype_arg({"dtype": "float128"})


@pytest.mark.parametrize("size", [[], [0], [3], [2, 3, 4], [8, 8]])
def test_size_arg_within_the_limit(size: list[int]) -> None:
    ctx = Context(CPU, max_elements=64)
    assert size_arg({"size": tuple(size)}, ctx, "x") == size


@pytest.mark.parametrize("size", [[65], [8, 9], [2, 2, 2, 2, 2, 2, 2]])
def test_size_arg_over_the_limit_is_refused(size: list[int]) -> None:
    with pytest.raises(LimitExceeded) as refusal:
        size_arg({"shape": size}, Context(CPU, max_elements=64), "x", key="shape")
    assert refusal.value.details == {
        "limit": "max_elements",
        "allowed": 64,
        "requested": math.prod(size),
    }


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (1, 1), (-1, -1), ([0, 2], (0, 2)), ([], ())]
)
def test_dims_arg(value: Any, expected: Any) -> None:
    assert dims_arg(value) == expected


def test_the_op_table_is_its_parts_without_overlap() -> None:
    parts = [FACTORY_OPS, SHAPE_OPS, ELEMENTWISE_OPS, REDUCTION_OPS]
    assert sum(len(part) for part in parts) == len(OPS)
    for part in parts:
        assert all(OPS[name] is fn for name, fn in part.items())
