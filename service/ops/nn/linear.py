"""``torch.nn.Linear``'s forward pass (``POST /layers/linear``): planned against the limits,
then run with parameters initialised as torch initialises them (see
:mod:`service.ops.nn.layers`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.context import make_generator
from service.ops.nn.layers import CPU, META, as_shape, compute_dtype, shape_error

INIT_PASSES = 8
"""Passes over a parameter: drawn from a uniform distribution (on a CPU about 5 passes of
x * 2), converted to the input's dtype, given values copied in, moved to the device."""


@dataclass(frozen=True)
class LinearSpec:
    """The arguments of ``torch.nn.Linear``."""

    in_features: int
    out_features: int
    bias: bool = True

    def __str__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias})"
        )


@dataclass(frozen=True)
class LinearResult:
    """A Linear layer's output and the parameters it used."""

    output: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None


def plan_linear(
    spec: LinearSpec,
    input_shape: Sequence[int],
    budget: Budget,
    *,
    weight_shape: Sequence[int] | None = None,
    bias_shape: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[int]:
    """Check the shapes and charge the layer's tensors (as shapes), its FLOPs at the rate of
    ``dtype`` (the input's: see :func:`~service.ops.nn.layers.compute_dtype`) and the
    element passes around them (drawing the parameters, converting and moving them and the
    input); return the output's shape.

    Raises :class:`InvalidInput` (``shape_mismatch``) in the layer's terms, or
    :class:`LimitExceeded` from the budget.
    """
    if len(input_shape) == 0:
        raise shape_error(
            f"input is a 0-d tensor; {spec} takes [*, {spec.in_features}] (the last "
            "dimension holds the features)",
            input_shape,
            None,
        )
    if input_shape[-1] != spec.in_features:
        raise shape_error(
            f"input has {input_shape[-1]} features, the layer expects {spec.in_features} "
            f"(in_features={spec.in_features}; input shape {as_shape(input_shape)}, features in "
            "the last dimension)",
            input_shape,
            [*input_shape[:-1], spec.in_features],
        )
    expected_weight = [spec.out_features, spec.in_features]
    if weight_shape is not None and as_shape(weight_shape) != expected_weight:
        raise shape_error(
            f"weight has shape {as_shape(weight_shape)}, {spec} expects {expected_weight} "
            "([out_features, in_features])",
            weight_shape,
            expected_weight,
        )
    if bias_shape is not None:
        if not spec.bias:
            raise InvalidInput(
                "bias_values is given but bias is false: a layer without bias has no bias "
                "values; set bias to true or leave bias_values out",
                code=ErrorCode.UNEXPECTED_ARGUMENT,
            )
        if as_shape(bias_shape) != [spec.out_features]:
            raise shape_error(
                f"bias_values has shape {as_shape(bias_shape)}, {spec} expects "
                f"[{spec.out_features}] ([out_features])",
                bias_shape,
                [spec.out_features],
            )
    rows = math.prod(input_shape[:-1])
    output_shape = [*as_shape(input_shape[:-1]), spec.out_features]
    budget.charge_shape(input_shape, f"input of shape {as_shape(input_shape)}")
    budget.charge_shape(expected_weight, f"weight of shape {expected_weight}")
    parameters = spec.out_features * spec.in_features
    if spec.bias:
        budget.charge_shape([spec.out_features], f"bias of shape [{spec.out_features}]")
        parameters += spec.out_features
    budget.charge_shape(output_shape, f"output of shape {output_shape}")
    what = f"{spec} on {rows:,} rows"
    flops = estimate_matmul_flops((rows, spec.in_features), (spec.in_features, spec.out_features))
    budget.charge_flops(flops, what, dtype=dtype)
    budget.charge_elementwise(
        INIT_PASSES * parameters + math.prod(input_shape), f"{what}: parameters and input"
    )
    return output_shape


def build_linear(spec: LinearSpec, seed: int | None) -> nn.Linear:
    """``torch.nn.Linear`` on the CPU, initialised as ``torch.manual_seed(seed); nn.Linear``."""
    module = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias, device=META)
    module = module.to_empty(device=CPU)
    generator = make_generator(seed)
    # nn.Linear.reset_parameters, drawing from our generator instead of the global one.
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in = spec.in_features
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return module


def linear_forward(
    spec: LinearSpec,
    input: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    seed: int | None = None,
    device: torch.device = CPU,
    deadline: Deadline | None = None,
) -> LinearResult:
    """Run ``nn.Linear`` on ``input`` (planned with :func:`plan_linear` first)."""
    dtype = compute_dtype(input.dtype)
    module = build_linear(spec, seed).to(dtype)
    with torch.no_grad():
        if weight is not None:
            module.weight.copy_(weight)
        if bias is not None and module.bias is not None:
            module.bias.copy_(bias)
    module = module.to(device)
    if deadline is not None:
        deadline.check()
    with torch.no_grad():  # a forward pass only (the service also runs under inference_mode)
        output = module(input.to(device=device, dtype=dtype))
    return LinearResult(output, module.weight, module.bias)
