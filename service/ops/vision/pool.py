"""Pooling (tutorial chapter 6.2): ``torch.nn.functional``'s max, average, adaptive and
Lp pooling, planned on ``meta`` (torch's shape rules, the output and FLOPs charged) before
it runs on the request's device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from schemas.vision import PoolKind
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget
from service.ops.vision.cost import charge_pool2d, pool_window_reads
from service.ops.vision.functional import META, Pair, pair, torch_call

POOL_KINDS: tuple[str, ...] = get_args(PoolKind)
"""The pooling kinds, as the schema lists them."""


@dataclass(frozen=True)
class PoolSpec:
    """A pooling's parameters (``None``: torch's default)."""

    kind: str = "max"
    kernel_size: Pair | None = None
    stride: Pair | None = None
    padding: Pair | None = None
    dilation: Pair | None = None
    ceil_mode: bool | None = None
    count_include_pad: bool | None = None
    output_size: int | tuple[int | None, int | None] | None = None
    norm_type: float | None = None

    @property
    def window(self) -> tuple[int, int]:
        """The window ``(kh, kw)``: ``kernel_size``, 2 by default."""
        return pair(self.kernel_size if self.kernel_size is not None else 2)

    @property
    def label(self) -> str:
        """``max 2×2/2``, ``adaptive_avg → 7×7``: for PNG panels."""
        if self.kind.startswith("adaptive"):
            size = self.output_size
            shown = (
                f"{size}×{size}"
                if isinstance(size, int)
                else "×".join("·" if s is None else str(s) for s in size or ())
            )
            return f"{self.kind} → {shown}"
        kh, kw = self.window
        stride = pair(self.stride) if self.stride is not None else (kh, kw)
        return f"{self.kind} {kh}×{kw}/{stride[0]}" + (
            "" if stride[0] == stride[1] else f",{stride[1]}"
        )


def pool2d(x: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    """The pooling ``spec.kind`` of ``x`` ``[N, C, H, W]``, as ``torch.nn.functional``'s."""
    kind = spec.kind
    window = spec.window
    stride = pair(spec.stride) if spec.stride is not None else window
    ceil_mode = bool(spec.ceil_mode)
    if kind == "max":
        return torch_call(
            "max_pool2d",
            lambda: F.max_pool2d(
                x,
                window,
                stride,
                pair(spec.padding or 0),
                pair(spec.dilation or 1),
                ceil_mode=ceil_mode,
            ),
        )
    if kind == "avg":
        include = True if spec.count_include_pad is None else spec.count_include_pad
        return torch_call(
            "avg_pool2d",
            lambda: F.avg_pool2d(
                x,
                window,
                stride,
                pair(spec.padding or 0),
                ceil_mode=ceil_mode,
                count_include_pad=include,
            ),
        )
    if kind == "lp":
        norm = 2.0 if spec.norm_type is None else float(spec.norm_type)
        return torch_call(
            "lp_pool2d", lambda: F.lp_pool2d(x, norm, window, stride, ceil_mode=ceil_mode)
        )
    size = spec.output_size
    if size is None:
        raise InvalidInput(f"pool kind {kind!r} needs output_size", code=ErrorCode.MISSING_PARAM)
    if kind == "adaptive_avg":
        return torch_call("adaptive_avg_pool2d", lambda: F.adaptive_avg_pool2d(x, size))
    if kind == "adaptive_max":
        return torch_call(
            "adaptive_max_pool2d",
            lambda: F.adaptive_max_pool2d(x, size),  # type: ignore[arg-type]
        )
    raise InvalidInput(
        f"unknown pool kind {kind!r}; kinds: {', '.join(POOL_KINDS)}", code=ErrorCode.UNKNOWN_POOL
    )


def pool_flops(spec: PoolSpec, input_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """FLOPs: one operation per window element read per output (three for Lp pooling); the
    adaptive kinds read each output's own window."""
    reads = pool_window_reads(spec.kind, spec.window, input_shape, output_shape)
    return reads * (3 if spec.kind == "lp" else 1)


def plan_pool(
    spec: PoolSpec, shape: Sequence[int], dtype: torch.dtype, budget: Budget
) -> list[int]:
    """The pooled shape of an input of ``shape``, with torch's checks on ``meta``; the
    output and the work (every window's reads, in ``dtype``) are charged."""
    out = pool2d(torch.empty(tuple(shape), dtype=dtype, device=META), spec)
    shape_out = list(out.shape)
    budget.charge_shape(shape_out, f"the {spec.kind} pooling's output")
    charge_pool2d(
        budget,
        spec.kind,
        spec.window,
        shape,
        shape_out,
        dtype=dtype,
        what=f"the {spec.kind} pooling",
    )
    return shape_out


def pool_forward(x: torch.Tensor, spec: PoolSpec, *, device: torch.device) -> torch.Tensor:
    """Pool ``x`` ``[N, C, H, W]`` on ``device``; returns a CPU tensor."""
    return pool2d(x.to(device), spec).cpu()
