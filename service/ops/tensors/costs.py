"""What a ``/tensor/ops`` step costs, worked out before it runs.

Before a step runs, even on ``meta``: the tensors it will return are counted from its
arguments (``split`` and ``chunk`` make one per piece, and torch's meta pass builds every
piece too) and charged as objects (:func:`charge_outputs`). After the meta pass has given
every output's shape and dtype, each output is charged as a shape by the interpreter, and the
step's work by its real algorithm (:func:`charge_work`): ``matmul`` as FLOPs at its dtype's
rate, everything else as passes over the elements it reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from service.limits import HALF_FLOATS, Budget
from service.ops.tensors.arguments import dtype_arg

PIECE_SECONDS = 2e-5
"""Time of one piece of ``split`` or ``chunk`` beyond the object itself: it is built twice
(on ``meta``, then on the device), named, charged, stored and perhaps encoded (measured on
a CPU: 13 µs to plan and run, a few more to encode)."""

# Passes over the elements a step reads, beyond the one that writes each output (which its
# shape's charge covers), relative to the device's measured elementwise pass (x * 2): for
# float32 and for the 16-bit floats, whose kernels convert each element (on a CPU 2 to 10
# times slower: std, argmax and pow the most).
_PASSES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("add", "sub", "mul", "div", "neg", "abs", "relu", "clamp"), (1, 2)),
    **dict.fromkeys(("exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid"), (4, 8)),
    "pow": (16, 64),
    **dict.fromkeys(("sum", "mean", "max", "min"), (1, 2)),
    **dict.fromkeys(("argmax", "argmin"), (16, 48)),
    **dict.fromkeys(("std", "var"), (4, 48)),
    "cumsum": (4, 8),
    "softmax": (8, 16),
    **dict.fromkeys(("contiguous", "clone", "cat", "stack", "repeat", "tensor"), (1, 1)),
    "to": (2, 2),
    # Random numbers are drawn on the CPU, then copied to the device.
    **dict.fromkeys(("rand", "randint"), (5, 5)),
    "randn": (16, 32),
}
REDUCTION_OUTPUT_PASSES: dict[str, float] = {
    **dict.fromkeys(("std", "var", "argmax", "argmin", "norm"), 56),
    **dict.fromkeys(("sum", "mean", "max", "min", "logsumexp"), 12),
}
"""Element passes per output of a reduction, beyond its passes over what it reads: a
reduction along a short dimension pays for each output it writes. On a CPU, ``var`` of
[4194304, 2, 2] along dim 1 took 32 passes of its input (2 inputs per output), 9 with 8
inputs per output, 4 with 64; ``argmax`` and the norms 25–29 along a short dimension other
than the last; a float64 ``sum`` 6.4."""

_ACCUMULATING = frozenset({"sum", "mean", "softmax"})


def accumulated_copy(op: str, args: Mapping[str, Any]) -> int:
    """Elements of the copy of ``x`` that a reduction makes in the type it adds up in before
    it reads: the ``dtype`` asked for, or int64 for integers and booleans. On a CPU, ``sum``
    of 2**25 uint8 took 264 MB beside its 32 MB input (``cumsum`` writes its output in that
    type and scans it in place: no copy)."""
    x = args.get("x")
    if op not in _ACCUMULATING or not isinstance(x, torch.Tensor):
        return 0
    dtype = dtype_arg(args)
    if dtype is not None:
        return x.numel() if dtype != x.dtype else 0
    integral = not (x.is_floating_point() or x.is_complex())
    return x.numel() if integral and x.dtype != torch.int64 and op != "softmax" else 0


# Ops that return views (no element is read): reshape and flatten copy a non-contiguous x.
_COPY_WHEN_STRIDED = frozenset({"reshape", "flatten"})
_NORM_CHEAP_P = (1, 2, "Infinity", "-Infinity")


def _size_along(x: Any, dim: Any) -> int | None:
    """``x.shape[dim]``, or None when torch will refuse the dimension itself."""
    if not isinstance(x, torch.Tensor) or not isinstance(dim, int) or isinstance(dim, bool):
        return None
    if not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        return None
    return int(x.shape[dim]) if x.dim() else 1


def output_count(op: str, args: Mapping[str, Any]) -> int:
    """How many tensors a step returns, from its arguments alone (before torch builds them)."""
    if op == "split":
        sections = args["split_size_or_sections"]
        if isinstance(sections, list):
            return max(len(sections), 1)
        size = _size_along(args["x"], args["dim"])
        if size is None or not isinstance(sections, int) or sections <= 0:
            return 1  # torch refuses it (or returns x whole)
        return max(1, -(-size // sections))
    if op == "chunk":
        chunks = args["chunks"]
        size = _size_along(args["x"], args["dim"])
        if size is None or not isinstance(chunks, int) or chunks <= 0:
            return 1
        if size == 0:
            return chunks  # torch returns `chunks` empty pieces
        return -(-size // -(-size // chunks))
    if op in ("max", "min") and args.get("dim") is not None:
        return 2  # the values and the indices
    return 1


def charge_outputs(op: str, args: Mapping[str, Any], budget: Budget, what: str) -> None:
    """Charge the tensors a step will return, before it runs (even on ``meta``)."""
    count = output_count(op, args)
    budget.charge_objects(count, f"{what}: {count:,} output tensors")
    if op in ("split", "chunk"):
        budget.charge_seconds(count * PIECE_SECONDS, f"{what}: {count:,} pieces")


def _numel(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


def _read(args: Mapping[str, Any], keys: Sequence[str]) -> int:
    elements = sum(_numel(args.get(key)) for key in keys)
    return elements + sum(_numel(t) for t in args.get("tensors", ()))


def element_passes(op: str, args: Mapping[str, Any], outputs: Sequence[torch.Tensor]) -> float:
    """Element passes a step makes beyond writing its outputs (see the table above)."""
    x = args.get("x")
    if op in _COPY_WHEN_STRIDED:
        return float(x.numel()) if isinstance(x, torch.Tensor) and not x.is_contiguous() else 0.0
    plain: float
    half: float
    if op == "norm":
        cheap = args.get("p") in _NORM_CHEAP_P
        plain, half = (4, 48) if cheap else (32, 64)
    elif op in _PASSES:
        plain, half = _PASSES[op]
    else:
        return 0.0  # a view, or info
    dtypes = {t.dtype for t in outputs} | {
        value.dtype for value in args.values() if isinstance(value, torch.Tensor)
    }
    factor = half if dtypes & HALF_FLOATS else plain
    elements = max(_read(args, ("x", "y", "exponent", "data")), sum(t.numel() for t in outputs))
    if args.get("dtype") is not None and op not in ("to", "tensor"):
        elements += _numel(x)  # a reduction casts its input first
    kept = outputs[0].numel() if outputs else 0
    return float(factor * elements + REDUCTION_OUTPUT_PASSES.get(op, 0.0) * kept)


SVD_FLOPS = 64
"""FLOPs charged per m·n·min(m, n) of a singular value decomposition (the nuclear norm's),
at the dtype's matrix-multiply rate: LAPACK's SVD runs 14 to 34 times slower than a
multiply of the same matrix (2·n³ FLOPs) on a CPU, from n = 1024 down to 256."""
SVD_MATRIX_FLOPS = 1 << 26
"""FLOPs charged per matrix besides: a batch of 64 matrices of 64×64 took 17 ms."""


def svd_flops(shape: Sequence[int], dims: Sequence[int]) -> float:
    """What the singular values of ``shape``'s matrices over ``dims`` are charged."""
    if len(dims) != 2 or not all(-len(shape) <= d < len(shape) for d in dims):
        return 0.0  # torch refuses it when it runs on meta
    m, n = (shape[d] for d in dims)
    matrices = math.prod(shape) // max(m * n, 1)
    return float(matrices * (SVD_FLOPS * m * n * min(m, n) + SVD_MATRIX_FLOPS))


def charge_work(
    op: str, args: Mapping[str, Any], outputs: Sequence[torch.Tensor], budget: Budget, what: str
) -> None:
    """Charge a planned step's work: a matmul's FLOPs at its dtype's rate, else its passes
    over the elements it reads."""
    if op == "matmul" and outputs:
        budget.charge_matmul(args["x"].shape, args["y"].shape, what, outputs[0].dtype)
        return
    if op == "norm" and args.get("p") == "nuc" and outputs:
        x = args["x"]
        dim = args.get("dim")
        dims = (-2, -1) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
        budget.charge_flops(svd_flops(tuple(x.shape), dims), f"{what} (singular values)", x.dtype)
    copy = accumulated_copy(op, args)
    if copy:
        budget.charge_tensors(copy, f"{what} (x copied to the type it is summed in)")
    passes = element_passes(op, args, outputs)
    if passes:
        budget.charge_elementwise(passes, what)
