"""``/activate``, ``POST /layers/linear`` and ``POST /layers/rnn`` without HTTP: each request
decoded and planned against the limits (``prepare_*``), then run (``compute_*``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from schemas.activations import (
    MAX_FUNCTIONS,
    ActivateRequest,
    ActivationInfo,
    ActivationListResponse,
    ActivationParamInfo,
    ActivationRange,
)
from schemas.common import Tensor
from schemas.layers import LinearRequest, RNNRequest
from service.codec import DTYPES
from service.errors import OpError
from service.limits import Deadline
from service.memory import allocation_failed
from service.ops.context import ComputeContext
from service.ops.nn.binding import BoundActivation, bind
from service.ops.nn.evaluation import as_input, charge, evaluate
from service.ops.nn.layers import compute_dtype
from service.ops.nn.linear import LinearSpec, linear_forward, plan_linear
from service.ops.nn.registry import ACTIVATIONS, DEFAULT_FUNCTIONS, Activation
from service.ops.nn.rnn import RNNSpec, plan_rnn, rnn_forward
from service.ops.render.activations import activation_figure, charge_activation_plot
from service.ops.render.plots import panel_grid
from service.ops.render.png import Png, panel_headers

# --- GET /activate ---------------------------------------------------------------------------


def activation_listing(max_plot_points: int) -> ActivationListResponse:
    """Every supported function with its formula, parameters and range, the defaults, and
    the limits in force (``max_plot_points``: the configured ``Limits.max_plot_points``)."""
    return ActivationListResponse(
        functions=_infos(),
        default_functions=list(DEFAULT_FUNCTIONS),
        default_range=ActivationRange(),
        max_functions=MAX_FUNCTIONS,
        max_plot_points=max_plot_points,
    )


@functools.cache
def _infos() -> list[ActivationInfo]:
    # The registry never changes while the service runs: described once.
    return [_info(activation) for activation in ACTIVATIONS]


def _info(activation: Activation) -> ActivationInfo:
    return ActivationInfo(
        name=activation.name,
        nn_class=activation.nn_class,
        formula=activation.formula,
        latex=activation.latex,
        output_range=activation.output_range,
        params=[
            ActivationParamInfo(
                name=param.name,
                type=param.expected,
                default=param.default,
                required=param.required,
                choices=list(param.choices) or None,
                description=param.description,
            )
            for param in activation.params
        ],
        along_dim=activation.along_dim,
        derivative=activation.derivative,
    )


# --- POST /activate --------------------------------------------------------------------------


@dataclass
class ActivatePlan:
    """The functions bound to their parameters and the inputs, admitted by the limits."""

    functions: list[BoundActivation]
    x: torch.Tensor
    """The inputs on the CPU, as the functions take them (see ``as_input``)."""
    device: torch.device
    derivative: bool
    png: bool
    columns: int | None
    answer: list[tuple[tuple[int, ...], torch.dtype]] | None = None
    """The shape and dtype of every tensor a JSON answer holds (the response sized before
    the work): x, y and ``dydx`` of each function, each x's shape and dtype; ``None`` for a
    figure, whose size is checked once drawn."""


def _requested(body: ActivateRequest) -> list[tuple[str, Mapping[str, object]]]:
    if body.function is not None:
        return [(body.function, {})]
    if body.functions is None:
        return [(name, {}) for name in DEFAULT_FUNCTIONS]
    return [
        (item, {}) if isinstance(item, str) else (item.function, item.params)
        for item in body.functions
    ]


def _inputs(ctx: ComputeContext, body: ActivateRequest) -> torch.Tensor:
    """x decoded, or the range built (after its size is charged), on the CPU."""
    if body.x is not None:
        x = ctx.decode(body.x.root, "x")
        ctx.budget.charge_shape(x.shape, "x")
        return x
    spec = body.range or ActivationRange()
    ctx.budget.charge_shape([spec.steps], f"range of {spec.steps:,} steps")
    try:
        return torch.linspace(spec.start, spec.end, spec.steps, dtype=DTYPES[spec.dtype])
    except RuntimeError as exc:  # start or end beyond the dtype's range
        if allocation_failed(exc):
            raise
        raise OpError(f"range: {exc}", details={"dtype": spec.dtype}) from exc


def prepare_activate(ctx: ComputeContext, body: ActivateRequest) -> ActivatePlan:
    """Bind the functions, build the inputs and charge every output (and, for a PNG, the
    figure's points) to the limits."""
    shared: dict[str, object] = dict(body.params)
    if body.dim is not None:
        shared["dim"] = body.dim
    functions = bind(_requested(body), shared)
    x = as_input(_inputs(ctx, body))
    charge(functions, x, ctx.budget, derivative=body.derivative)
    png = body.format == "png"
    if not png:  # every result repeats x
        ctx.budget.charge_elementwise(len(functions) * x.numel(), "x in every result")
    if png:
        charge_activation_plot(
            ctx.budget,
            len(functions),
            x.numel(),
            derivative=body.derivative,
            columns=body.columns,
            max_points=ctx.limits.max_plot_points,
            max_pixels=ctx.limits.max_png_pixels,
        )
    answer = None
    if not png:
        each = (tuple(x.shape), x.dtype)
        answer = [each] * (len(functions) * (3 if body.derivative else 2))
    return ActivatePlan(functions, x, ctx.device, body.derivative, png, body.columns, answer)


def compute_activate(plan: ActivatePlan, deadline: Deadline) -> dict[str, Any] | Png:
    """Every function (and its derivative) over x on the plan's device: the results, or the
    figure of one panel per function."""
    on_device = plan.x.to(plan.device)
    evaluations = []
    for bound in plan.functions:
        deadline.check()
        evaluations.append(
            evaluate(bound, on_device, derivative=plan.derivative, deadline=deadline)
        )
    if plan.png:
        data = activation_figure(plan.functions, plan.x, evaluations, columns=plan.columns)
        rows, columns = panel_grid(len(plan.functions), plan.columns)
        return Png(data, panel_headers(len(plan.functions), rows, columns))
    return {
        "results": [
            {
                "function": bound.name,
                "params": bound.params,
                "x": plan.x,
                "y": result.y,
                "dydx": result.dydx,
            }
            for bound, result in zip(plan.functions, evaluations, strict=True)
        ]
    }


# --- POST /layers/linear ---------------------------------------------------------------------


def _wire(value: Tensor | None) -> Any:
    """An optional tensor's JSON value, for ``ctx.decode_optional``."""
    return None if value is None else value.root


@dataclass
class LinearLayerPlan:
    """A Linear layer's arguments and tensors, planned against the limits."""

    spec: LinearSpec
    input: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    seed: int | None
    device: torch.device
    answer: list[tuple[tuple[int, ...], torch.dtype]] = field(default_factory=list)
    """The shape and dtype of every tensor answered (the response sized before the work)."""


def prepare_linear_layer(ctx: ComputeContext, body: LinearRequest) -> LinearLayerPlan:
    """Decode the input and the given parameters; check every shape in the layer's terms
    and charge the parameters, output and FLOPs."""
    spec = LinearSpec(body.in_features, body.out_features, body.bias)
    input = ctx.decode(body.input.root, "input")
    weight = ctx.decode_optional(_wire(body.weight), "weight")
    bias = ctx.decode_optional(_wire(body.bias_values), "bias_values")
    dtype = compute_dtype(input.dtype)
    output_shape = plan_linear(
        spec,
        input.shape,
        ctx.budget,
        weight_shape=None if weight is None else weight.shape,
        bias_shape=None if bias is None else bias.shape,
        dtype=dtype,
    )
    shapes = [output_shape, [spec.out_features, spec.in_features]]
    if spec.bias:
        shapes.append([spec.out_features])
    answer = [(tuple(shape), dtype) for shape in shapes]
    return LinearLayerPlan(spec, input, weight, bias, body.seed, ctx.device, answer)


def compute_linear_layer(plan: LinearLayerPlan, deadline: Deadline) -> dict[str, Any]:
    """The layer's output and the parameters it used."""
    result = linear_forward(
        plan.spec,
        plan.input,
        weight=plan.weight,
        bias=plan.bias,
        seed=plan.seed,
        device=plan.device,
        deadline=deadline,
    )
    return {"output": result.output, "weight": result.weight, "bias": result.bias}


# --- POST /layers/rnn ------------------------------------------------------------------------


@dataclass
class RNNLayerPlan:
    """A recurrent layer's arguments, tensors and options, planned against the limits."""

    spec: RNNSpec
    input: torch.Tensor
    h0: torch.Tensor | None
    c0: torch.Tensor | None
    weights: dict[str, torch.Tensor]
    seed: int | None
    return_weights: bool
    device: torch.device
    answer: list[tuple[tuple[int, ...], torch.dtype]] = field(default_factory=list)
    """The shape and dtype of every tensor answered (the response sized before the work)."""


def prepare_rnn_layer(ctx: ComputeContext, body: RNNRequest) -> RNNLayerPlan:
    """Decode the input, the states and the given parameters; check every shape in the
    layer's terms and charge the parameters, states, outputs and gate FLOPs."""
    spec = RNNSpec(
        mode=body.mode,
        input_size=body.input_size,
        hidden_size=body.hidden_size,
        num_layers=body.num_layers,
        nonlinearity=body.nonlinearity,
        bias=body.bias,
        batch_first=body.batch_first,
        bidirectional=body.bidirectional,
    )
    weights = {
        name: ctx.decode(value.root, f"weights.{name}")
        for name, value in (body.weights or {}).items()
    }
    input = ctx.decode(body.input.root, "input")
    h0 = ctx.decode_optional(_wire(body.h0), "h0")
    c0 = ctx.decode_optional(_wire(body.c0), "c0")
    dtype = compute_dtype(input.dtype)
    planned = plan_rnn(
        spec,
        input.shape,
        ctx.budget,
        h0_shape=None if h0 is None else h0.shape,
        c0_shape=None if c0 is None else c0.shape,
        weight_shapes={name: value.shape for name, value in weights.items()},
        dtype=dtype,
    )
    shapes = [planned.output_shape, planned.state_shape]
    if spec.mode == "lstm":
        shapes.append(planned.state_shape)
    if body.return_weights:
        shapes.extend(spec.parameter_shapes().values())
    answer = [(tuple(shape), dtype) for shape in shapes]
    return RNNLayerPlan(
        spec, input, h0, c0, weights, body.seed, body.return_weights, ctx.device, answer
    )


def compute_rnn_layer(plan: RNNLayerPlan, deadline: Deadline) -> dict[str, Any]:
    """The output sequence, the final states, every parameter's shape and (unless the
    request said otherwise) its values."""
    result = rnn_forward(
        plan.spec,
        plan.input,
        h0=plan.h0,
        c0=plan.c0,
        weights=plan.weights,
        seed=plan.seed,
        device=plan.device,
        deadline=deadline,
    )
    return {
        "output": result.output,
        "h_n": result.h_n,
        "c_n": result.c_n,
        "parameters": {name: list(value.shape) for name, value in result.parameters.items()},
        "weights": result.parameters if plan.return_weights else None,
    }
