"""Convolution (tutorial chapter 6.1): ``torch.nn.functional.conv2d`` with the request's
parameters, planned on ``meta`` before anything is allocated, then run on the request's
device with the optional activation and pooling after it.

Every shape is checked by running the same functions on ``meta`` tensors (shapes, no
storage): torch's own rules decide, its refusals become 422s, and the outputs and FLOPs are
charged to the request's :class:`Budget` before the real work. The weight itself is built
by :mod:`service.ops.vision.weights`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.nn.activations import BoundActivation, charge, evaluate
from service.ops.vision.cost import charge_conv2d
from service.ops.vision.functional import META, Pair, pair, torch_call
from service.ops.vision.pool import PoolSpec, plan_pool, pool2d

CPU = torch.device("cpu")

Padding = int | tuple[int, int] | Literal["valid", "same"]


@dataclass(frozen=True)
class ConvSpec:
    """A convolution's parameters, as ``torch.nn.functional.conv2d`` takes them, and the
    size and ``sigma`` of its preset kernels."""

    kernel_size: int | None = None
    sigma: float | None = None
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: int = 1
    bias: bool = False


@dataclass(frozen=True)
class ConvWeight:
    """The weight and bias of a request, and a label per output channel."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    labels: list[str]


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` with the spec's parameters; torch's refusals are 422s."""
    padding: str | tuple[int, int] = (
        spec.padding if isinstance(spec.padding, str) else pair(spec.padding)
    )
    return torch_call(
        "conv2d",
        lambda: F.conv2d(
            x,
            weight,
            bias,
            stride=pair(spec.stride),
            padding=padding,
            dilation=pair(spec.dilation),
            groups=spec.groups,
        ),
    )


def conv_flops(weight_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """2 · N · out · (C/groups) · kh · kw · H' · W': a multiply and an add per weight and
    output element."""
    _, per_group, kh, kw = weight_shape
    return 2.0 * math.prod(output_shape) * per_group * kh * kw


@dataclass(frozen=True)
class ConvShapes:
    """The shapes of a convolution request, checked and charged: the convolution's, and
    the output's after the activation and pooling."""

    conv_shape: list[int]
    output_shape: list[int]


def same_padding_copy(
    input_shape: Sequence[int], weight_shape: Sequence[int], spec: ConvSpec
) -> int:
    """Elements of the padded copy of the input a ``"same"`` padding makes first, when a
    dimension's padding ``dilation · (k − 1)`` is odd and cannot be split evenly (0 when
    torch pads inside the convolution)."""
    if spec.padding != "same":
        return 0
    dilation = pair(spec.dilation)
    kernel = (int(weight_shape[2]), int(weight_shape[3]))
    extra = [dilation[i] * (kernel[i] - 1) % 2 for i in range(2)]
    if not any(extra):
        return 0
    n, c, h, w = (int(s) for s in input_shape)
    return n * c * (h + extra[0]) * (w + extra[1])


ACTIVATION_UNITS = 2
"""Elementwise passes of an activation after the convolution: its output written, read."""


def plan_conv(
    input_shape: Sequence[int],
    dtype: torch.dtype,
    weight_shape: Sequence[int],
    spec: ConvSpec,
    budget: Budget,
    *,
    activation: BoundActivation | None = None,
    pool: PoolSpec | None = None,
    device: torch.device = CPU,
) -> ConvShapes:
    """The convolution's shape (and, after the activation and pooling, the output's), with
    torch's checks on ``meta``; every output is charged, and the work as the algorithm on
    ``device`` does it (:func:`service.ops.vision.cost.charge_conv2d`)."""
    x = torch.empty(tuple(input_shape), dtype=dtype, device=META)
    w = torch.empty(tuple(weight_shape), dtype=dtype, device=META)
    conv = conv2d(x, w, None, spec)
    conv_shape = list(conv.shape)
    if conv.numel() == 0:
        # Nothing to see, and planning the pooling of an empty batch takes torch time that
        # grows with its other dimensions.
        raise InvalidInput(
            f"the convolution's output would have shape {conv_shape}, which holds no values "
            "(a kernel without output channels?)",
            details={"shape": conv_shape},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    budget.charge_tensor(math.prod(conv_shape), "the convolution's output")
    charge_conv2d(
        budget,
        input_shape,
        weight_shape,
        conv_shape,
        groups=spec.groups,
        dtype=dtype,
        device=device,
        padded_copy=same_padding_copy(input_shape, weight_shape, spec),
    )
    if activation is not None:
        charge([activation], conv, budget, derivative=False)
        budget.charge_elementwise(conv.numel() * ACTIVATION_UNITS, f"{activation.name}(x)")
    output_shape = conv_shape if pool is None else plan_pool(pool, conv_shape, dtype, budget)
    return ConvShapes(conv_shape, output_shape)


@dataclass(frozen=True)
class ConvResult:
    """A convolution's output (after activation and pooling) and its shape before them."""

    output: torch.Tensor
    conv_shape: list[int]


def conv_forward(
    x: torch.Tensor,
    weight: ConvWeight,
    spec: ConvSpec,
    *,
    activation: BoundActivation | None = None,
    pool: PoolSpec | None = None,
    device: torch.device,
    deadline: Deadline | None = None,
) -> ConvResult:
    """Convolve ``x`` ``[N, C, H, W]`` on ``device``, then apply the activation and the
    pooling when given. Returns CPU tensors."""
    on_device = x.to(device)
    w = weight.weight.to(device)
    b = None if weight.bias is None else weight.bias.to(device)
    y = conv2d(on_device, w, b, spec)
    conv_shape = list(y.shape)
    if deadline is not None:
        deadline.check()
    if activation is not None:
        y = evaluate(activation, y).y
    if pool is not None:
        y = pool2d(y, pool)
    return ConvResult(y.cpu(), conv_shape)
