"""An inference request of a V2 model: its inputs decoded and its parameters checked, its
shapes planned on ``meta`` and charged to the budget (:func:`prepare_infer`), then the
operation on the request's device (:func:`compute_infer`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from schemas.v2 import IGNORED_PARAMETERS, OUTPUT_NAME
from service.errors import ErrorCode, InvalidInput
from service.limits import HALF_FLOATS, Budget, Deadline
from service.ops import products
from service.ops.context import ComputeContext
from service.ops.nn.activations import BoundActivation, as_input, bind, charge, evaluate
from service.ops.v2.models import Model, find_model
from service.ops.vision.conv import ConvSpec, conv2d, plan_conv
from service.ops.vision.functional import META, Pair, torch_call
from service.ops.vision.pool import PoolSpec, plan_pool, pool2d


@dataclass
class InferPlan:
    """What the operation needs: its tensors, its checked parameters, the device."""

    model: str
    inputs: dict[str, torch.Tensor]
    device: torch.device
    activation: BoundActivation | None = None
    conv: ConvSpec | None = None
    pool: PoolSpec | None = None
    unbatched: bool = False
    """A [C, H, W] input of a convolution or pooling, run as a batch of one."""
    conv_dtype: torch.dtype | None = None
    """The dtype a convolution runs in, when not its input's (cast back after)."""


def _meta(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else torch.empty(tensor.shape, dtype=tensor.dtype, device=META)


def input_where(name: str) -> str:
    """How an input is named in the errors of its tensor."""
    return f"inputs.{name}"


def _inputs(ctx: ComputeContext, model: Model, wires: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for name in wires:
        if model.input(name) is None:
            raise InvalidInput(
                f"model {model.name} has no input {name[:64]!r}; its inputs: "
                f"{', '.join(spec.name for spec in model.inputs)}",
                details={"input": name[:64], "model": model.name},
                code=ErrorCode.UNKNOWN_NAME,
            )
    for spec in model.inputs:
        if spec.name not in wires and not spec.optional:
            raise InvalidInput(
                f"model {model.name} needs the input {spec.name!r}",
                details={"input": spec.name, "model": model.name},
                code=ErrorCode.MISSING_INPUT,
            )
    tensors = {name: ctx.decode(wire, input_where(name)) for name, wire in wires.items()}
    for name, tensor in tensors.items():
        ctx.budget.charge_shape(tensor.shape, f"input {name}")
    return tensors


def _own_params(model: Model, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The request's parameters that are the model's; any other (but the protocol's own) is
    a 422 ``unknown_param``."""
    allowed = [p.name for p in model.params]
    own = {}
    for name, value in parameters.items():
        if name in IGNORED_PARAMETERS or name.startswith("triton_"):
            continue
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise InvalidInput(
                f"parameters: model {model.name} has no parameter {name[:64]!r}; it takes {takes}",
                details={"param": name[:64], "allowed": allowed, "model": model.name},
                code=ErrorCode.UNKNOWN_PARAM,
            )
        own[name] = value
    return own


def _pair(params: Mapping[str, Any], name: str, default: Pair | None, low: int) -> Pair | None:
    value = params.get(name, default)
    if value is None:
        return None
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= low) or (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
    )
    if not ok:
        raise InvalidInput(
            f"parameters.{name} must be an integer >= {low} or a list of two, got {value!r:.60}",
            details={"param": name},
            code=ErrorCode.INVALID_PARAM,
        )
    return value if isinstance(value, int) else (value[0], value[1])


def _batched(x: torch.Tensor, model: Model) -> bool:
    """Whether a convolution's or pooling's input is unbatched ([C, H, W]); other ranks
    than 3 and 4 are a 422."""
    if x.ndim not in (3, 4):
        raise InvalidInput(
            f"{model.name}: input must be [N, C, H, W] or [C, H, W], got shape {list(x.shape)}",
            details={"shape": list(x.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    return x.ndim == 3


def prepare_infer(
    ctx: ComputeContext, name: str, inputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> InferPlan:
    """Decode the inputs, check the parameters, plan the output on ``meta`` and charge it
    (and the work) to the budget: every refusal happens here."""
    model = find_model(name)
    params = _own_params(model, parameters)
    tensors = _inputs(ctx, model, inputs)
    budget = ctx.budget
    plan = InferPlan(model.name, tensors, ctx.device)
    if model.kind == "activation":
        (plan.activation,) = bind([(model.name, params)], {})
        x = as_input(tensors["input"])
        tensors["input"] = x
        charge([plan.activation], x, budget, derivative=False)
    elif model.kind in ("matmul", "linear"):
        _plan_product(model, tensors, budget)
    elif model.kind == "conv2d":
        _plan_conv(plan, model, tensors, ctx, params)
    else:
        x = tensors["input"]
        plan.unbatched = _batched(x, model)
        plan.pool = PoolSpec(
            kind="max" if model.kind == "max_pool2d" else "avg",
            kernel_size=_pair(params, "kernel_size", None, 1) or _missing(model, "kernel_size"),
            stride=_pair(params, "stride", None, 1),
            padding=_pair(params, "padding", 0, 0),
        )
        shape = [1, *x.shape] if plan.unbatched else list(x.shape)
        plan_pool(plan.pool, shape, x.dtype, budget)
    return plan


def _missing(model: Model, name: str) -> Pair:
    raise InvalidInput(
        f"model {model.name} needs the parameter {name!r} (in the request's parameters)",
        details={"param": name, "model": model.name},
        code=ErrorCode.MISSING_PARAM,
    )


def _plan_product(model: Model, tensors: dict[str, torch.Tensor], budget: Budget) -> None:
    if model.kind == "matmul":
        a, b = tensors["input"], tensors["other"]
        out = torch_call("matmul", lambda: torch.matmul(_meta(a), _meta(b)))  # type: ignore[arg-type]
        budget.charge_shape(out.shape, f"{model.name}'s output")
        budget.charge_matmul(a.shape, b.shape, f"matmul of {list(out.shape)}", out.dtype)
        return
    x, w, bias = tensors["input"], tensors["weight"], tensors.get("bias")
    out = torch_call("linear", lambda: F.linear(_meta(x), _meta(w), _meta(bias)))  # type: ignore[arg-type]
    budget.charge_shape(out.shape, f"{model.name}'s output")
    # x @ weightᵀ: its reads as well as its FLOPs (a thin or integer product is bound by them)
    flipped = tuple(reversed(w.shape))
    budget.charge_matmul(x.shape, flipped, f"{model.name} of {list(out.shape)}", out.dtype)


def _plan_conv(
    plan: InferPlan,
    model: Model,
    tensors: dict[str, torch.Tensor],
    ctx: ComputeContext,
    params: Mapping[str, Any],
) -> None:
    x, w, bias = tensors["input"], tensors["weight"], tensors.get("bias")
    plan.unbatched = _batched(x, model)
    if w.ndim != 4:
        raise InvalidInput(
            f"{model.name}: weight must be [out_channels, C/groups, kH, kW], got shape "
            f"{list(w.shape)}",
            details={"shape": list(w.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    padding = params.get("padding", 0)
    groups = params.get("groups", 1)
    if not (isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1):
        raise InvalidInput(
            f"parameters.groups must be an integer >= 1, got {groups!r:.60}",
            details={"param": "groups"},
            code=ErrorCode.INVALID_PARAM,
        )
    plan.conv = ConvSpec(
        stride=_pair(params, "stride", 1, 1) or 1,
        padding=padding if padding in ("same", "valid") else (_pair(params, "padding", 0, 0) or 0),
        dilation=_pair(params, "dilation", 1, 1) or 1,
        groups=groups,
    )
    batch = x.unsqueeze(0) if plan.unbatched else x
    spec = plan.conv
    conv2d(_meta(batch), _meta(w), _meta(bias), spec)  # type: ignore[arg-type]
    dtype = x.dtype
    # A half convolution runs in float32 on a CPU, cast back (as /conv does): torch's float16
    # one took under a millisecond for 40×40, and had not finished after 40 s for 64×64 by
    # 15×15 in 2 groups.
    if ctx.device.type == "cpu" and dtype in HALF_FLOATS:
        plan.conv_dtype = dtype = torch.float32
        ctx.budget.charge_elementwise(2.0 * (x.numel() + w.numel()), "conv2d: to float32")
    plan_conv(tuple(batch.shape), dtype, tuple(w.shape), spec, ctx.budget, device=ctx.device)


def compute_infer(plan: InferPlan, deadline: Deadline) -> dict[str, Any]:
    """Run the planned operation; the content is ``{"output": tensor}``."""
    device = plan.device
    x = {name: tensor.to(device) for name, tensor in plan.inputs.items()}
    if plan.activation is not None:
        y = evaluate(plan.activation, x["input"], deadline=deadline).y
    elif plan.model == "matmul":
        y = torch_call("matmul", lambda: products.matmul(x["input"], x["other"]))
    elif plan.model == "linear":
        y = torch_call("linear", lambda: products.linear(x["input"], x["weight"], x.get("bias")))
    else:
        batch = x["input"].unsqueeze(0) if plan.unbatched else x["input"]
        if plan.conv is not None:
            weight, bias, dtype = x["weight"], x.get("bias"), plan.conv_dtype
            if dtype is not None:  # the input, weight and bias cast once each
                batch, weight = batch.to(dtype), weight.to(dtype)
                bias = None if bias is None else bias.to(dtype)
            y = conv2d(batch, weight, bias, plan.conv).to(x["input"].dtype)
        else:
            assert plan.pool is not None
            y = pool2d(batch, plan.pool)
        if plan.unbatched:
            y = y.squeeze(0)
    return {OUTPUT_NAME: y}
