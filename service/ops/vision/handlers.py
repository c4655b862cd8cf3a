"""``POST /conv`` and ``POST /pool`` without HTTP: the request decoded and planned (every
limit checked, the picture's from its header), then the forward pass and the figure.

Everything that can refuse a request happens in ``prepare_*``, before a compute slot is
taken: decoding the input, building the weight, planning the shapes and the figure's size.
``compute_*`` only runs torch on the plan and draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from schemas.common import Tensor
from schemas.vision import ConvRequest, PoolParams, PoolRequest
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.nn.activations import BoundActivation, bind
from service.ops.render.images import (
    FeatureLayout,
    charge_feature_maps,
    feature_maps_png,
    figure_layout,
)
from service.ops.render.png import Png, panel_headers
from service.ops.vision.conv import ConvSpec, ConvWeight, conv_forward, plan_conv
from service.ops.vision.inputs import load_input
from service.ops.vision.kernels import check_kernel_name
from service.ops.vision.pool import PoolSpec, plan_pool, pool_forward
from service.ops.vision.weights import KernelInput, build_weight


def _pair(value: int | list[int]) -> int | tuple[int, int]:
    return (value[0], value[1]) if isinstance(value, list) else value


def _optional_pair(value: int | list[int] | None) -> int | tuple[int, int] | None:
    return None if value is None else _pair(value)


def pool_spec(params: PoolParams) -> PoolSpec:
    """The pooling parameters of a request (``/pool``'s body or ``/conv``'s ``pool``)."""
    output_size = params.output_size
    return PoolSpec(
        kind=params.kind,
        kernel_size=_optional_pair(params.kernel_size),
        stride=_optional_pair(params.stride),
        padding=_optional_pair(params.padding),
        dilation=_optional_pair(params.dilation),
        ceil_mode=params.ceil_mode,
        count_include_pad=params.count_include_pad,
        output_size=(output_size[0], output_size[1])
        if isinstance(output_size, list)
        else output_size,
        norm_type=params.norm_type,
    )


def conv_spec(body: ConvRequest) -> ConvSpec:
    """The convolution parameters of a ``/conv`` body."""
    padding = body.padding
    return ConvSpec(
        kernel_size=body.kernel_size,
        sigma=body.sigma,
        stride=_pair(body.stride),
        padding=(padding[0], padding[1]) if isinstance(padding, list) else padding,
        dilation=_pair(body.dilation),
        groups=body.groups,
        bias=body.bias,
    )


def _kernel(ctx: ComputeContext, value: str | Tensor, index: int) -> KernelInput:
    if isinstance(value, str):
        return value
    if isinstance(value.root, str):
        check_kernel_name(value.root, index)
    return ctx.decode(value.root, f"kernels[{index}]")


def _activation(body: ConvRequest) -> BoundActivation | None:
    if body.activation is None:
        return None
    if isinstance(body.activation, str):
        return bind([(body.activation, {})], {})[0]
    return bind([(body.activation.function, body.activation.params)], {})[0]


def _figure(
    ctx: ComputeContext, form: str, input_shape: Sequence[int], output_shape: Sequence[int]
) -> FeatureLayout | None:
    """With ``"format": "png"``, the figure's layout (refused over ``max_png_pixels``) and
    its drawing charged; ``None`` for JSON."""
    if form != "png":
        return None
    layout = figure_layout(input_shape, output_shape, max_pixels=ctx.limits.max_png_pixels)
    charge_feature_maps(layout, input_shape, output_shape, ctx.budget)
    return layout


def _headers(layout: FeatureLayout) -> dict[str, str]:
    return panel_headers(layout.panels, layout.rows, layout.columns)


@dataclass
class ConvPlan:
    """A ``/conv`` request decoded and planned against the limits: what running it needs."""

    x: torch.Tensor
    weight: ConvWeight
    spec: ConvSpec
    activation: BoundActivation | None
    pool: PoolSpec | None
    device: torch.device
    layout: FeatureLayout | None
    """The figure's layout with ``"format": "png"``; ``None`` answers JSON."""
    answer: list[tuple[tuple[int, ...], torch.dtype]] | None = None
    """The shape and dtype of every tensor a JSON answer holds (the response sized before
    the work); ``None`` for a figure, whose size is checked once drawn."""


def _answer(
    layout: FeatureLayout | None, *tensors: tuple[Sequence[int], torch.dtype] | None
) -> list[tuple[tuple[int, ...], torch.dtype]] | None:
    if layout is not None:
        return None
    return [(tuple(int(n) for n in shape), dtype) for shape, dtype in filter(None, tensors)]


def prepare_conv(ctx: ComputeContext, body: ConvRequest, upload: bytes | None) -> ConvPlan:
    """Decode the input (``upload``: an uploaded picture's bytes), build the weight, and
    charge the convolution, activation, pooling and figure to the limits."""
    activation = _activation(body)
    pool = None if body.pool is None else pool_spec(body.pool)
    spec = conv_spec(body)
    x = load_input(ctx, body, upload)
    kernels = [_kernel(ctx, kernel, index) for index, kernel in enumerate(body.kernels)]
    bias_values = ctx.decode_optional(
        None if body.bias_values is None else body.bias_values.root, "bias_values"
    )
    weight = build_weight(
        kernels,
        spec,
        int(x.shape[1]),
        x.dtype,
        seed=body.seed,
        bias_values=bias_values,
        budget=ctx.budget,
    )
    shapes = plan_conv(
        x.shape,
        x.dtype,
        weight.weight.shape,
        spec,
        ctx.budget,
        activation=activation,
        pool=pool,
        device=ctx.device,
    )
    layout = _figure(ctx, body.format, x.shape, shapes.output_shape)
    bias = None if weight.bias is None else (weight.bias.shape, weight.bias.dtype)
    answer = _answer(
        layout, (shapes.output_shape, x.dtype), (weight.weight.shape, weight.weight.dtype), bias
    )
    return ConvPlan(x, weight, spec, activation, pool, ctx.device, layout, answer)


def compute_conv(plan: ConvPlan, deadline: Deadline) -> dict[str, Any] | Png:
    """Convolve on the plan's device (then the activation and pooling); the tensors, or
    the input and every feature map side by side as a PNG."""
    deadline.check()
    result = conv_forward(
        plan.x,
        plan.weight,
        plan.spec,
        activation=plan.activation,
        pool=plan.pool,
        device=plan.device,
        deadline=deadline,
    )
    if plan.layout is not None:
        data = feature_maps_png(plan.x, result.output, plan.weight.labels, plan.layout)
        return Png(data, _headers(plan.layout))
    return {
        "output": result.output,
        "weight": plan.weight.weight,
        "bias": plan.weight.bias,
        "kernels": plan.weight.labels,
        "input_shape": list(plan.x.shape),
        "conv_shape": result.conv_shape,
    }


@dataclass
class PoolPlan:
    """A ``/pool`` request decoded and planned against the limits: what running it needs."""

    x: torch.Tensor
    spec: PoolSpec
    device: torch.device
    layout: FeatureLayout | None
    """The figure's layout with ``"format": "png"``; ``None`` answers JSON."""
    answer: list[tuple[tuple[int, ...], torch.dtype]] | None = None
    """As :attr:`ConvPlan.answer`."""


def prepare_pool(ctx: ComputeContext, body: PoolRequest, upload: bytes | None) -> PoolPlan:
    """Decode the input (``upload``: an uploaded picture's bytes) and charge the pooling
    and figure to the limits."""
    spec = pool_spec(body)
    x = load_input(ctx, body, upload)
    output_shape = plan_pool(spec, x.shape, x.dtype, ctx.budget)
    layout = _figure(ctx, body.format, x.shape, output_shape)
    return PoolPlan(x, spec, ctx.device, layout, _answer(layout, (output_shape, x.dtype)))


def compute_pool(plan: PoolPlan, deadline: Deadline) -> dict[str, Any] | Png:
    """Pool on the plan's device; the tensor, or the input and every pooled channel side by
    side as a PNG."""
    deadline.check()
    output = pool_forward(plan.x, plan.spec, device=plan.device)
    if plan.layout is not None:
        labels = [f"{plan.spec.label} [{c}]" for c in range(int(output.shape[1]))]
        data = feature_maps_png(plan.x, output, labels, plan.layout)
        return Png(data, _headers(plan.layout))
    return {"output": output, "input_shape": list(plan.x.shape)}
