"""Steps of ``POST /tensor/ops``, one typed function per op, with the service's parameter
names: ``ops.matmul("a", "b", out="c")`` is ``{"op": "matmul", "x": "a", "y": "b", "out":
"c"}``. Parameters left None are not sent (the service's defaults apply); a tensor
parameter takes a name (an input or an earlier ``out``) or an inline array.

    import torchlab_client as tl
    from torchlab_client import ops

    client.tensor_ops(
        [ops.arange(16, out="t"), ops.reshape("t", [4, 4], out="t"), ops.matmul("t", "t")],
    )

GENERATED from the service's OpenAPI document by
``clients/python/scripts/tensor_ops_reference.py``: do not edit it, run the script again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

Step: TypeAlias = dict[str, Any]
"""One step of a program, as ``tensor_ops`` sends it."""
TensorRef: TypeAlias = Any
"""A name (an input or an earlier step's ``out``) or an inline tensor (an array, nested
lists); where the service says so, also a number."""

DType: TypeAlias = Literal[
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "BOOL",
    "UINT8",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
]
"""A dtype name: torch's or the Open Inference Protocol's."""

PARAMETERS: dict[str, tuple[str, ...]] = {
    "tensor": ("data", "dtype", "out"),
    "eye": ("n", "m", "dtype", "out"),
    "zeros": ("size", "dtype", "out"),
    "ones": ("size", "dtype", "out"),
    "full": ("size", "fill_value", "dtype", "out"),
    "arange": ("end", "start", "step", "dtype", "out"),
    "linspace": ("start", "end", "steps", "dtype", "out"),
    "rand": ("size", "dtype", "seed", "out"),
    "randn": ("size", "dtype", "seed", "out"),
    "randint": ("high", "size", "low", "dtype", "seed", "out"),
    "reshape": ("x", "shape", "out"),
    "view": ("x", "shape", "out"),
    "flatten": ("x", "start_dim", "end_dim", "out"),
    "squeeze": ("x", "dim", "out"),
    "unsqueeze": ("x", "dim", "out"),
    "permute": ("x", "dims", "out"),
    "transpose": ("x", "dim0", "dim1", "out"),
    "t": ("x", "out"),
    "cat": ("tensors", "dim", "out"),
    "stack": ("tensors", "dim", "out"),
    "split": ("x", "split_size_or_sections", "dim", "out"),
    "chunk": ("x", "chunks", "dim", "out"),
    "expand": ("x", "size", "out"),
    "repeat": ("x", "repeats", "out"),
    "contiguous": ("x", "out"),
    "clone": ("x", "out"),
    "index": ("x", "index", "out"),
    "to": ("x", "dtype", "out"),
    "add": ("x", "y", "alpha", "out"),
    "sub": ("x", "y", "alpha", "out"),
    "mul": ("x", "y", "out"),
    "div": ("x", "y", "rounding_mode", "out"),
    "pow": ("x", "exponent", "out"),
    "clamp": ("x", "min", "max", "out"),
    "matmul": ("x", "y", "out"),
    "neg": ("x", "out"),
    "abs": ("x", "out"),
    "exp": ("x", "out"),
    "log": ("x", "out"),
    "sqrt": ("x", "out"),
    "sin": ("x", "out"),
    "cos": ("x", "out"),
    "tanh": ("x", "out"),
    "sigmoid": ("x", "out"),
    "relu": ("x", "out"),
    "sum": ("x", "dim", "keepdim", "dtype", "out"),
    "mean": ("x", "dim", "keepdim", "dtype", "out"),
    "std": ("x", "dim", "correction", "keepdim", "out"),
    "var": ("x", "dim", "correction", "keepdim", "out"),
    "max": ("x", "dim", "keepdim", "out"),
    "min": ("x", "dim", "keepdim", "out"),
    "argmax": ("x", "dim", "keepdim", "out"),
    "argmin": ("x", "dim", "keepdim", "out"),
    "norm": ("x", "p", "dim", "keepdim", "out"),
    "cumsum": ("x", "dim", "dtype", "out"),
    "softmax": ("x", "dim", "dtype", "out"),
    "info": ("x", "out"),
}
"""Each op's parameters (``out`` last), the ops in the order of the schema."""
OPS: tuple[str, ...] = tuple(PARAMETERS)
"""Every op the service runs."""
TENSOR_FIELDS = frozenset(["data", "exponent", "x", "y"])
"""Parameters that hold one tensor (a name or an inline array)."""
TENSOR_LIST_FIELDS = frozenset(["tensors"])
"""Parameters that hold a list of tensors."""


def _step(op: str, fields: dict[str, Any]) -> Step:
    """The step, its parameters left None not sent."""
    sent = {key: value for key, value in fields.items() if value is not None}
    return {"op": op, **sent}


def tensor(data: TensorRef, *, dtype: DType | None = None, out: str | None = None) -> Step:
    """``torch.tensor(data, dtype=dtype)``: a tensor written inline.

    Args:
        data: The values, in any tensor form.
        dtype: Cast to this dtype.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("tensor", {"data": data, "dtype": dtype, "out": out})


def eye(
    n: int, *, m: int | None = None, dtype: DType | None = None, out: str | None = None
) -> Step:
    """``torch.eye(n, m)``: ones on the diagonal.

    Args:
        n: Rows.
        m: Columns (default n).
        dtype: Default float32.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("eye", {"n": n, "m": m, "dtype": dtype, "out": out})


def zeros(size: Sequence[int], *, dtype: DType | None = None, out: str | None = None) -> Step:
    """``torch.zeros(size)``.

    Args:
        size: Sizes of the dimensions (at most 8).
        dtype: Default float32.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("zeros", {"size": size, "dtype": dtype, "out": out})


def ones(size: Sequence[int], *, dtype: DType | None = None, out: str | None = None) -> Step:
    """``torch.ones(size)``.

    Args:
        size: Sizes of the dimensions (at most 8).
        dtype: Default float32.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("ones", {"size": size, "dtype": dtype, "out": out})


def full(
    size: Sequence[int],
    fill_value: float | bool,
    *,
    dtype: DType | None = None,
    out: str | None = None,
) -> Step:
    """``torch.full(size, fill_value)``.

    Args:
        size: Sizes of the dimensions (at most 8).
        fill_value: The value of every element.
        dtype: Default: inferred from fill_value.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("full", {"size": size, "fill_value": fill_value, "dtype": dtype, "out": out})


def arange(
    end: float,
    *,
    start: float | None = None,
    step: float | None = None,
    dtype: DType | None = None,
    out: str | None = None,
) -> Step:
    """``torch.arange(start, end, step)``: int64 when all three are integers, else float32.

    Args:
        end: End (exclusive).
        start: First value. Default: ``0``.
        step: Spacing; not zero. Default: ``1``.
        dtype: Default int64 when start, end and step are all integers, else float32.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("arange", {"end": end, "start": start, "step": step, "dtype": dtype, "out": out})


def linspace(
    start: float, end: float, steps: int, *, dtype: DType | None = None, out: str | None = None
) -> Step:
    """``torch.linspace(start, end, steps)``: evenly spaced, both ends included.

    Args:
        start: First value.
        end: Last value (included).
        steps: Number of values.
        dtype: Default float32.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step(
        "linspace", {"start": start, "end": end, "steps": steps, "dtype": dtype, "out": out}
    )


def rand(
    size: Sequence[int],
    *,
    dtype: DType | None = None,
    seed: int | None = None,
    out: str | None = None,
) -> Step:
    """``torch.rand(size)``: uniform on [0, 1).

    Args:
        size: Sizes of the dimensions (at most 8).
        dtype: A float dtype; default float32.
        seed: Seed for this step alone.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("rand", {"size": size, "dtype": dtype, "seed": seed, "out": out})


def randn(
    size: Sequence[int],
    *,
    dtype: DType | None = None,
    seed: int | None = None,
    out: str | None = None,
) -> Step:
    """``torch.randn(size)``: standard normal.

    Args:
        size: Sizes of the dimensions (at most 8).
        dtype: A float dtype; default float32.
        seed: Seed for this step alone.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("randn", {"size": size, "dtype": dtype, "seed": seed, "out": out})


def randint(
    high: int,
    size: Sequence[int],
    *,
    low: int | None = None,
    dtype: DType | None = None,
    seed: int | None = None,
    out: str | None = None,
) -> Step:
    """``torch.randint(low, high, size)``: integers in [low, high).

    Args:
        high: One above the largest value.
        size: Sizes of the dimensions (at most 8).
        low: Smallest value (included); below ``high``. Default: ``0``.
        dtype: Default int64.
        seed: Seed for this step alone.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step(
        "randint",
        {"high": high, "size": size, "low": low, "dtype": dtype, "seed": seed, "out": out},
    )


def reshape(x: TensorRef, shape: Sequence[int], *, out: str | None = None) -> Step:
    """``torch.reshape(x, shape)``: one size may be -1 (inferred).

    Args:
        x: Input tensor: a name or an inline tensor.
        shape: The new shape; one size may be -1 (inferred).
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("reshape", {"x": x, "shape": shape, "out": out})


def view(x: TensorRef, shape: Sequence[int], *, out: str | None = None) -> Step:
    """``x.view(shape)``: like reshape but never copies; a non-contiguous x is a 422.

    Args:
        x: Input tensor: a name or an inline tensor.
        shape: The new shape; one size may be -1 (inferred).
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("view", {"x": x, "shape": shape, "out": out})


def flatten(
    x: TensorRef,
    *,
    start_dim: int | None = None,
    end_dim: int | None = None,
    out: str | None = None,
) -> Step:
    """``torch.flatten(x, start_dim, end_dim)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        start_dim: A dimension of x; negative counts from the end. Default: ``0``.
        end_dim: A dimension of x; negative counts from the end. Default: ``-1``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("flatten", {"x": x, "start_dim": start_dim, "end_dim": end_dim, "out": out})


def squeeze(
    x: TensorRef, *, dim: int | Sequence[int] | None = None, out: str | None = None
) -> Step:
    """``torch.squeeze(x, dim)``: drop dimensions of size 1 (all of them when dim is null).

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("squeeze", {"x": x, "dim": dim, "out": out})


def unsqueeze(x: TensorRef, dim: int, *, out: str | None = None) -> Step:
    """``torch.unsqueeze(x, dim)``: insert a dimension of size 1.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: A dimension of x; negative counts from the end.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("unsqueeze", {"x": x, "dim": dim, "out": out})


def permute(x: TensorRef, dims: Sequence[int], *, out: str | None = None) -> Step:
    """``torch.permute(x, dims)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dims: The new order of the dimensions.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("permute", {"x": x, "dims": dims, "out": out})


def transpose(
    x: TensorRef, *, dim0: int | None = None, dim1: int | None = None, out: str | None = None
) -> Step:
    """``torch.transpose(x, dim0, dim1)``: a view; the result is not contiguous.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim0: A dimension of x; negative counts from the end. Default: ``0``.
        dim1: A dimension of x; negative counts from the end. Default: ``1``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("transpose", {"x": x, "dim0": dim0, "dim1": dim1, "out": out})


def t(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.t(x)``: transpose of a tensor of at most 2 dimensions.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("t", {"x": x, "out": out})


def cat(tensors: Sequence[TensorRef], *, dim: int | None = None, out: str | None = None) -> Step:
    """``torch.cat(tensors, dim)``: join along an existing dimension.

    Args:
        tensors: Tensors (names or inline) to join.
        dim: A dimension of x; negative counts from the end. Default: ``0``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("cat", {"tensors": tensors, "dim": dim, "out": out})


def stack(tensors: Sequence[TensorRef], *, dim: int | None = None, out: str | None = None) -> Step:
    """``torch.stack(tensors, dim)``: join along a new dimension.

    Args:
        tensors: Tensors (names or inline) to join.
        dim: A dimension of x; negative counts from the end. Default: ``0``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("stack", {"tensors": tensors, "dim": dim, "out": out})


def split(
    x: TensorRef,
    split_size_or_sections: int | Sequence[int],
    *,
    dim: int | None = None,
    out: str | None = None,
) -> Step:
    """``torch.split(x, split_size_or_sections, dim)``: pieces stored as ``<out>.0``, ``<out>.1``…

    Args:
        x: Input tensor: a name or an inline tensor.
        split_size_or_sections: Size of each piece (the last may be smaller; 0 only for an empty
            dimension), or the list of sizes (summing to the dimension's size).
        dim: A dimension of x; negative counts from the end. Default: ``0``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step(
        "split", {"x": x, "split_size_or_sections": split_size_or_sections, "dim": dim, "out": out}
    )


def chunk(x: TensorRef, chunks: int, *, dim: int | None = None, out: str | None = None) -> Step:
    """``torch.chunk(x, chunks, dim)``: pieces stored as ``<out>.0``, ``<out>.1``, …

    Args:
        x: Input tensor: a name or an inline tensor.
        chunks: Number of pieces (fewer when the size does not divide).
        dim: A dimension of x; negative counts from the end. Default: ``0``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("chunk", {"x": x, "chunks": chunks, "dim": dim, "out": out})


def expand(x: TensorRef, size: Sequence[int], *, out: str | None = None) -> Step:
    """``x.expand(size)``: broadcast to a larger size without copying (-1 keeps a size).

    Args:
        x: Input tensor: a name or an inline tensor.
        size: The expanded size; -1 keeps a size; new leading dimensions may be added.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("expand", {"x": x, "size": size, "out": out})


def repeat(x: TensorRef, repeats: Sequence[int], *, out: str | None = None) -> Step:
    """``x.repeat(repeats)``: tile the tensor.

    Args:
        x: Input tensor: a name or an inline tensor.
        repeats: Copies along each dimension (at least one per dimension of x).
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("repeat", {"x": x, "repeats": repeats, "out": out})


def contiguous(x: TensorRef, *, out: str | None = None) -> Step:
    """``x.contiguous()``: a C-ordered copy when x is not already one.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("contiguous", {"x": x, "out": out})


def clone(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.clone(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("clone", {"x": x, "out": out})


def index(x: TensorRef, index: str, *, out: str | None = None) -> Step:
    """``x[index]`` with NumPy/PyTorch basic indexing written as a string.

    Args:
        x: Input tensor: a name or an inline tensor.
        index: Integers (negative count from the end), slices ``start:stop:step`` (step > 0, as
            torch requires; bounds and steps are clamped to the dimension as NumPy clamps them),
            ``None`` (new axis) and at most one ``...``, comma-separated, brackets optional; at most
            64 items, and no more integers and slices than x has dimensions, each integer within its
            dimension. Parsed by the service, never evaluated.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("index", {"x": x, "index": index, "out": out})


def to(x: TensorRef, dtype: DType, *, out: str | None = None) -> Step:
    """``x.to(dtype)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dtype: The dtype to convert to.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("to", {"x": x, "dtype": dtype, "out": out})


def add(x: TensorRef, y: TensorRef, *, alpha: float | None = None, out: str | None = None) -> Step:
    """``torch.add(x, y, alpha=alpha)`` = x + alpha·y.

    Args:
        x: Input tensor: a name or an inline tensor.
        y: Second operand: a name, an inline tensor or a number (broadcast as in torch); non-finite
            numbers are the strings "NaN", "Infinity", "-Infinity".
        alpha: Multiplier of y. Default: ``1``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("add", {"x": x, "y": y, "alpha": alpha, "out": out})


def sub(x: TensorRef, y: TensorRef, *, alpha: float | None = None, out: str | None = None) -> Step:
    """``torch.sub(x, y, alpha=alpha)`` = x − alpha·y.

    Args:
        x: Input tensor: a name or an inline tensor.
        y: Second operand: a name, an inline tensor or a number (broadcast as in torch); non-finite
            numbers are the strings "NaN", "Infinity", "-Infinity".
        alpha: Multiplier of y. Default: ``1``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("sub", {"x": x, "y": y, "alpha": alpha, "out": out})


def mul(x: TensorRef, y: TensorRef, *, out: str | None = None) -> Step:
    """``torch.mul(x, y)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        y: Second operand: a name, an inline tensor or a number (broadcast as in torch); non-finite
            numbers are the strings "NaN", "Infinity", "-Infinity".
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("mul", {"x": x, "y": y, "out": out})


def div(
    x: TensorRef,
    y: TensorRef,
    *,
    rounding_mode: Literal["trunc", "floor"] | None = None,
    out: str | None = None,
) -> Step:
    """``torch.div(x, y, rounding_mode=rounding_mode)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        y: Second operand: a name, an inline tensor or a number (broadcast as in torch); non-finite
            numbers are the strings "NaN", "Infinity", "-Infinity".
        rounding_mode: null: true division; ``trunc`` or ``floor``: integer-style rounding.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("div", {"x": x, "y": y, "rounding_mode": rounding_mode, "out": out})


def pow(x: TensorRef, exponent: TensorRef, *, out: str | None = None) -> Step:
    """``torch.pow(x, exponent)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        exponent: A number (non-finite ones as "NaN", "Infinity", "-Infinity"), a name or an inline
            tensor (broadcast).
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("pow", {"x": x, "exponent": exponent, "out": out})


def clamp(
    x: TensorRef, *, min: float | None = None, max: float | None = None, out: str | None = None
) -> Step:
    """``torch.clamp(x, min, max)``: at least one bound.

    Args:
        x: Input tensor: a name or an inline tensor.
        min: Lower bound; null: none.
        max: Upper bound; null: none.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("clamp", {"x": x, "min": min, "max": max, "out": out})


def matmul(x: TensorRef, y: TensorRef, *, out: str | None = None) -> Step:
    """``torch.matmul(x, y)``: matrix product with matmul's 1-D and batch rules.

    Args:
        x: Input tensor: a name or an inline tensor.
        y: Second operand: a name or inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("matmul", {"x": x, "y": y, "out": out})


def neg(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.neg(x)`` = −x.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("neg", {"x": x, "out": out})


def abs(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.abs(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("abs", {"x": x, "out": out})


def exp(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.exp(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("exp", {"x": x, "out": out})


def log(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.log(x)``: natural logarithm (NaN below 0, -Infinity at 0).

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("log", {"x": x, "out": out})


def sqrt(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.sqrt(x)`` (NaN below 0).

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("sqrt", {"x": x, "out": out})


def sin(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.sin(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("sin", {"x": x, "out": out})


def cos(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.cos(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("cos", {"x": x, "out": out})


def tanh(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.tanh(x)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("tanh", {"x": x, "out": out})


def sigmoid(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.sigmoid(x)`` = 1 / (1 + e^−x).

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("sigmoid", {"x": x, "out": out})


def relu(x: TensorRef, *, out: str | None = None) -> Step:
    """``torch.relu(x)`` = max(x, 0).

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("relu", {"x": x, "out": out})


def sum(
    x: TensorRef,
    *,
    dim: int | Sequence[int] | None = None,
    keepdim: bool | None = None,
    dtype: DType | None = None,
    out: str | None = None,
) -> Step:
    """``torch.sum(x, dim, keepdim, dtype)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        dtype: dtype of the result (the input is cast first); default: torch's choice.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("sum", {"x": x, "dim": dim, "keepdim": keepdim, "dtype": dtype, "out": out})


def mean(
    x: TensorRef,
    *,
    dim: int | Sequence[int] | None = None,
    keepdim: bool | None = None,
    dtype: DType | None = None,
    out: str | None = None,
) -> Step:
    """``torch.mean(x, dim, keepdim, dtype)``: needs a float dtype (or ``dtype``).

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        dtype: dtype of the result (the input is cast first); default: torch's choice.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("mean", {"x": x, "dim": dim, "keepdim": keepdim, "dtype": dtype, "out": out})


def std(
    x: TensorRef,
    *,
    dim: int | Sequence[int] | None = None,
    correction: float | None = None,
    keepdim: bool | None = None,
    out: str | None = None,
) -> Step:
    """``torch.std(x, dim, correction, keepdim)``: correction 1 is the sample std.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        correction: Subtracted from the count in the divisor: 1 = sample, 0 = population. Default:
            ``1``.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step(
        "std", {"x": x, "dim": dim, "correction": correction, "keepdim": keepdim, "out": out}
    )


def var(
    x: TensorRef,
    *,
    dim: int | Sequence[int] | None = None,
    correction: float | None = None,
    keepdim: bool | None = None,
    out: str | None = None,
) -> Step:
    """``torch.var(x, dim, correction, keepdim)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        correction: Subtracted from the count in the divisor: 1 = sample, 0 = population. Default:
            ``1``.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step(
        "var", {"x": x, "dim": dim, "correction": correction, "keepdim": keepdim, "out": out}
    )


def max(
    x: TensorRef, *, dim: int | None = None, keepdim: bool | None = None, out: str | None = None
) -> Step:
    """``torch.max(x)`` or, with dim, ``torch.max(x, dim)``: values in ``out``, indices in
    ``<out>.indices``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension to reduce; null: over the flattened tensor.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("max", {"x": x, "dim": dim, "keepdim": keepdim, "out": out})


def min(
    x: TensorRef, *, dim: int | None = None, keepdim: bool | None = None, out: str | None = None
) -> Step:
    """``torch.min(x)`` or, with dim, ``torch.min(x, dim)``: values in ``out``, indices in
    ``<out>.indices``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension to reduce; null: over the flattened tensor.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("min", {"x": x, "dim": dim, "keepdim": keepdim, "out": out})


def argmax(
    x: TensorRef, *, dim: int | None = None, keepdim: bool | None = None, out: str | None = None
) -> Step:
    """``torch.argmax(x, dim, keepdim)``: over the flattened tensor when dim is null.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension to reduce; null: over the flattened tensor.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("argmax", {"x": x, "dim": dim, "keepdim": keepdim, "out": out})


def argmin(
    x: TensorRef, *, dim: int | None = None, keepdim: bool | None = None, out: str | None = None
) -> Step:
    """``torch.argmin(x, dim, keepdim)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: Dimension to reduce; null: over the flattened tensor.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("argmin", {"x": x, "dim": dim, "keepdim": keepdim, "out": out})


def norm(
    x: TensorRef,
    *,
    p: Literal["fro", "nuc", "Infinity", "-Infinity"] | float | None = None,
    dim: int | Sequence[int] | None = None,
    keepdim: bool | None = None,
    out: str | None = None,
) -> Step:
    """``torch.norm(x, p, dim, keepdim)``: ``fro`` (= 2 for vectors), ``nuc``, or a number p.

    Args:
        x: Input tensor: a name or an inline tensor.
        p: Order of the norm: ``fro`` (Frobenius; 2 for vectors), ``nuc`` (nuclear), a number, or
            ``Infinity`` / ``-Infinity`` (largest / smallest absolute value). Default: ``'fro'``.
        dim: Dimension(s) to reduce; null reduces over every dimension.
        keepdim: Keep each reduced dimension, with size 1. Default: ``False``.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("norm", {"x": x, "p": p, "dim": dim, "keepdim": keepdim, "out": out})


def cumsum(x: TensorRef, dim: int, *, dtype: DType | None = None, out: str | None = None) -> Step:
    """``torch.cumsum(x, dim, dtype)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: A dimension of x; negative counts from the end.
        dtype: dtype of the result (the input is cast first); default: torch's choice.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("cumsum", {"x": x, "dim": dim, "dtype": dtype, "out": out})


def softmax(x: TensorRef, dim: int, *, dtype: DType | None = None, out: str | None = None) -> Step:
    """``torch.softmax(x, dim, dtype)``.

    Args:
        x: Input tensor: a name or an inline tensor.
        dim: A dimension of x; negative counts from the end.
        dtype: dtype of the result (the input is cast first); default: torch's choice.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("softmax", {"x": x, "dim": dim, "dtype": dtype, "out": out})


def info(x: TensorRef, *, out: str | None = None) -> Step:
    """Metadata of x as JSON: shape, size, stride, numel, dtype, is_contiguous.

    Args:
        x: Input tensor: a name or an inline tensor.
        out: The name the result is stored under. Default: ``"out"``.
    """
    return _step("info", {"x": x, "out": out})
