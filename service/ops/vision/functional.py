"""What convolution and pooling share: torch's parameter pairs, the ``meta`` device their
shapes are planned on, and calls into ``torch.nn.functional`` whose refusals are 422s."""

from __future__ import annotations

from collections.abc import Callable

import torch

from service.errors import OpError
from service.memory import allocation_failed

META = torch.device("meta")
"""Tensors with shapes and no storage: torch's own shape rules, run before any real work."""

Pair = int | tuple[int, int]
"""One size for both dimensions, or ``(height, width)``, as torch takes them."""


def pair(value: Pair) -> tuple[int, int]:
    """``value`` as ``(height, width)``."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def torch_call(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()``, with torch's refusals (bad shapes or parameters) as a 422 ``op_failed``
    naming ``name``; running out of memory is left to the device manager."""
    try:
        return fn()
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
        if allocation_failed(exc):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(f"{name}: {message}", details={"op": name}) from exc
