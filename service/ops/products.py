"""Matrix products as the routes compute them (``/tensor/ops``' ``matmul``, ``/grad``'s ``@``
and ``matmul``, the V2 models ``matmul`` and ``linear``).

On a CPU, a product of float16 or bfloat16 that is long or thin
(:func:`service.limits.widened_product`) runs in float32 and is cast back, as a half
convolution does: torch's half kernels there are fast on square products and erratic off
them (0.1 GFLOP/s for a float16 ``linear`` whose reduction passes 2¹⁹, a gigabyte of
scratch for a thin bfloat16 one), and the cost model charges what runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional

from service.limits import widened_product


def widening(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``fn`` (``torch.matmul``, ``mm``, ``mv``, ``dot``), in float32 where a half product
    would be long or thin; torch refuses what it refuses (shapes, a number for a tensor)."""

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        tensors = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        same = tensors and a.dtype == b.dtype and a.dim() >= 1 and b.dim() >= 1
        if same and widened_product(a.shape, b.shape, a.dtype, a.device.type):
            return fn(a.float(), b.float()).to(a.dtype)
        return fn(a, b)

    return product


matmul = widening(torch.matmul)
"""``torch.matmul(a, b)``, in float32 where a half product would be long or thin."""


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``: ``x @ weight.T + bias``, in float32 where the half
    product would be long or thin."""
    flipped = (
        (*weight.shape[:-2], weight.shape[-1], weight.shape[-2])
        if weight.dim() > 1
        else weight.shape
    )
    if x.dtype == weight.dtype and widened_product(x.shape, flipped, x.dtype, x.device.type):
        wide = None if bias is None else bias.float()
        return functional.linear(x.float(), weight.float(), wide).to(x.dtype)
    return functional.linear(x, weight, bias)
