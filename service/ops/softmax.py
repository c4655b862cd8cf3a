"""``softmax`` and ``softmin`` as every route computes them: ``/tensor/ops``, ``/activate``,
the V2 models and ``/grad``.

On a CPU, torch's float16 and bfloat16 softmax along a dimension other than the last takes
scratch memory in proportion to that dimension's length (about 500 bytes per row): a 16 MB
float16 input of shape [4194304, 2] took 1.9 GB and 1.1 s along dim 0, where float32 takes
35 MB and 64 ms. There the input is taken to float32, the softmax computed, and the result
cast back: one rounding of the same float32 computation, as torch's half kernel does it
(69 MB and 89 ms for that input).
"""

from __future__ import annotations

import torch

from service.limits import HALF_FLOATS


def _widened(input: torch.Tensor, dim: int, dtype: torch.dtype) -> bool:
    """Whether torch's CPU kernel would take a 16-bit input along a dimension that is not
    its last (a dimension torch refuses is left to torch)."""
    if input.device.type != "cpu" or dtype not in HALF_FLOATS or input.dim() < 2:
        return False
    if not -input.dim() <= dim < input.dim():
        return False
    return dim % input.dim() != input.dim() - 1


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.softmax(input, dim, dtype=dtype)``, in float32 where torch's CPU kernel for
    16-bit floats would take memory in proportion to ``dim``'s length."""
    computed = dtype or input.dtype
    if _widened(input, dim, computed):
        out = torch.softmax(input.to(computed), dim=dim, dtype=torch.float32)
        return out.to(computed)
    return torch.softmax(input, dim=dim, dtype=dtype)


def softmin(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.nn.functional.softmin``: the softmax of ``-input``."""
    return softmax(-input, dim, dtype)
