"""The weight of a ``/conv`` request: presets, seeded ``random`` channels and explicit
kernels in one ``[out, C/groups, kh, kw]`` tensor.

The weight is built as ``nn.Conv2d`` builds its own: every value is first drawn from a
private generator seeded by the request's ``seed`` exactly as
``torch.manual_seed(seed); nn.Conv2d(C, out, k, groups=groups, bias=bias)`` draws it (uniform
on ±1/√fan_in, weight then bias), then presets and explicit kernels overwrite their output
channels. So the tutorial's ``conv2d.weight.data[0] = ker`` after ``nn.Conv2d(1, 2, 5)`` is
``kernels: ["edge", "random"]``, and the ``random`` channel holds the numbers torch would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget
from service.ops.context import make_generator
from service.ops.vision.conv import ConvSpec, ConvWeight
from service.ops.vision.kernels import DEFAULT_KERNEL_SIZE, check_kernel_name, preset_kernel

KernelInput = str | torch.Tensor
"""A kernel of a request: a preset's name or an explicit (decoded) tensor."""


def _kernel_error(message: str, code: ErrorCode, **details: object) -> InvalidInput:
    return InvalidInput(message, details=dict(details), code=code)


def _explicit_rows(kernel: torch.Tensor, index: int, per_group: int) -> torch.Tensor:
    """An explicit kernel as ``[out, C/groups, kh, kw]`` rows of the weight."""
    where = f"kernels[{index}]"
    if kernel.ndim == 2:
        return kernel.expand(1, per_group, *kernel.shape)
    if kernel.ndim == 3:
        if kernel.shape[0] != per_group:
            raise _kernel_error(
                f"{where} has shape {list(kernel.shape)}: a 3-D kernel is [C/groups, kh, kw] "
                f"and the input has {per_group} channel(s) per group",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
        return kernel.unsqueeze(0)
    if kernel.ndim == 4:
        if kernel.shape[1] != per_group:
            raise _kernel_error(
                f"{where} has shape {list(kernel.shape)}: a 4-D kernel is "
                f"[out, C/groups, kh, kw] and the input has {per_group} channel(s) per group",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
        return kernel
    raise _kernel_error(
        f"{where} must be [kh, kw], [C/groups, kh, kw] or [out, C/groups, kh, kw], "
        f"got shape {list(kernel.shape)}",
        ErrorCode.SHAPE_MISMATCH,
        got=list(kernel.shape),
    )


def kernel_size_of(kernels: Sequence[KernelInput], requested: int | None) -> tuple[int, int]:
    """``(kh, kw)`` shared by every kernel: the explicit kernels' size, and ``kernel_size``
    (default 5) for the presets; a 422 ``kernel_size_mismatch`` when they disagree."""
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, torch.Tensor) and not 2 <= kernel.ndim <= 4:
            raise _kernel_error(
                f"kernels[{index}] must be [kh, kw], [C/groups, kh, kw] or "
                f"[out, C/groups, kh, kw], got shape {list(kernel.shape)}",
                ErrorCode.SHAPE_MISMATCH,
                got=list(kernel.shape),
            )
    sizes = {tuple(int(s) for s in k.shape[-2:]) for k in kernels if isinstance(k, torch.Tensor)}
    if len(sizes) > 1:
        raise _kernel_error(
            f"the explicit kernels have different sizes {sorted(sizes)}; a convolution's "
            "kernels share one size",
            ErrorCode.KERNEL_SIZE_MISMATCH,
            sizes=sorted(sizes),
        )
    presets = any(isinstance(k, str) for k in kernels)
    if not sizes:
        size = requested if requested is not None else DEFAULT_KERNEL_SIZE
        return size, size
    (explicit,) = sizes
    if presets:
        if requested is None and explicit[0] != explicit[1]:
            raise _kernel_error(
                f"the explicit kernels are {explicit[0]}×{explicit[1]}: give a square "
                "kernel_size of that size for the presets, or square kernels",
                ErrorCode.KERNEL_SIZE_MISMATCH,
                sizes=[list(explicit)],
            )
        size = requested if requested is not None else explicit[0]
        if (size, size) != explicit:
            raise _kernel_error(
                f"kernel_size {size} differs from the explicit kernels' "
                f"{explicit[0]}×{explicit[1]}; a convolution's kernels share one size",
                ErrorCode.KERNEL_SIZE_MISMATCH,
                sizes=[list(explicit)],
                kernel_size=size,
            )
    elif requested is not None and (requested, requested) != explicit:
        raise _kernel_error(
            f"kernel_size {requested} differs from the explicit kernels' "
            f"{explicit[0]}×{explicit[1]}",
            ErrorCode.KERNEL_SIZE_MISMATCH,
            sizes=[list(explicit)],
            kernel_size=requested,
        )
    return explicit[0], explicit[1]


def out_channels_of(kernels: Sequence[KernelInput]) -> int:
    """Output channels: one per preset and 2-D or 3-D kernel, ``out`` per 4-D kernel."""
    return sum(
        int(k.shape[0]) if isinstance(k, torch.Tensor) and k.ndim == 4 else 1 for k in kernels
    )


def build_weight(
    kernels: Sequence[KernelInput],
    spec: ConvSpec,
    in_channels: int,
    dtype: torch.dtype,
    *,
    seed: int | None,
    bias_values: torch.Tensor | None = None,
    budget: Budget | None = None,
) -> ConvWeight:
    """The weight ``[out, C/groups, kh, kw]`` (and bias) of a request; see the module
    docstring for how ``random`` channels and the default bias are drawn."""
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, str):
            check_kernel_name(kernel, index)
    kh, kw = kernel_size_of(kernels, spec.kernel_size)
    out_channels = out_channels_of(kernels)
    groups = spec.groups
    if in_channels % groups or out_channels % groups:
        raise InvalidInput(
            f"groups={groups} must divide both the input channels ({in_channels}) and the "
            f"output channels ({out_channels})",
            details={"groups": groups, "in_channels": in_channels, "out_channels": out_channels},
            code=ErrorCode.INVALID_GROUPS,
        )
    per_group = in_channels // groups
    if budget is not None:
        budget.charge_tensor(out_channels * per_group * kh * kw, "the convolution's weight")
        budget.charge_objects(out_channels, f"the labels of {out_channels:,} output channels")
    # nn.Conv2d's reset_parameters: kaiming_uniform_(a=√5) = uniform(±1/√fan_in), then the
    # bias uniform(±1/√fan_in), from one generator in that order.
    # The bounds are computed as torch computes them, so the values agree to the last bit.
    fan_in = per_group * kh * kw
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in)) if fan_in else 0.0
    bias_bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    generator = make_generator(seed)
    weight = torch.empty(out_channels, per_group, kh, kw, dtype=dtype)
    weight.uniform_(-weight_bound, weight_bound, generator=generator)
    bias: torch.Tensor | None = None
    if spec.bias:
        bias = torch.empty(out_channels, dtype=dtype)
        bias.uniform_(-bias_bound, bias_bound, generator=generator)
    labels: list[str] = []
    row = 0
    for index, kernel in enumerate(kernels):
        if isinstance(kernel, str):
            if kernel != "random":
                weight[row] = preset_kernel(kernel, kh, spec.sigma).to(dtype)
            labels.append(kernel)
            row += 1
            continue
        rows = _explicit_rows(kernel.to(dtype), index, per_group)
        weight[row : row + rows.shape[0]] = rows
        if rows.shape[0] == 1 and kernel.ndim < 4:
            labels.append(f"kernel[{index}]")
        else:
            labels.extend(f"kernel[{index}][{j}]" for j in range(rows.shape[0]))
        row += rows.shape[0]
    if bias_values is not None:
        if bias_values.ndim != 1 or bias_values.shape[0] != out_channels:
            raise InvalidInput(
                f"bias_values has shape {list(bias_values.shape)}; the convolution has "
                f"{out_channels} output channel(s), so it must be [{out_channels}]",
                details={"got": list(bias_values.shape), "expected": [out_channels]},
                code=ErrorCode.SHAPE_MISMATCH,
            )
        bias = bias_values.to(dtype)
    return ConvWeight(weight, bias, labels)
