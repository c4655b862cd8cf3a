"""``POST /layers/linear`` and ``POST /layers/rnn``: decode, plan against the limits, run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request

from schemas.common import Tensor
from schemas.layers import LinearRequest, LinearResponse, RNNRequest, RNNResponse
from service.api.compute import run_compute_legacy
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.codec import decode_tensor
from service.config import Settings
from service.deps import EncodingDep, devices_of, settings_of
from service.limits import Budget, Deadline
from service.ops.nn.layers import (
    LinearSpec,
    RNNSpec,
    linear_forward,
    plan_linear,
    plan_rnn,
    rnn_forward,
)

router = APIRouter(route_class=ORJSONRoute, tags=["layers"], responses=COMPUTE_ERRORS)


def _decode(value: Tensor | None, settings: Settings, where: str) -> torch.Tensor | None:
    if value is None:
        return None
    return decode_tensor(value.root, max_elements=settings.limits.max_elements, where=where)


@dataclass(frozen=True)
class _LinearInputs:
    input: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None


@router.post(
    "/layers/linear",
    operation_id="linear_layer",
    summary="A fully connected layer's forward pass",
    response_model=LinearResponse,
    response_class=FastJSONResponse,
)
async def linear_layer(
    body: LinearRequest, request: Request, encoding: EncodingDep = "json"
) -> FastJSONResponse:
    """`torch.nn.Linear(in_features, out_features, bias)(input)` = input·Wᵀ + b (chapter 6.5).

    `weight` and `bias_values` are used as given; those not given are initialised as
    `torch.manual_seed(seed); torch.nn.Linear(in_features, out_features)` initialises them
    (random without a seed). The response returns the parameters used. Shapes are checked in
    the layer's terms ("input has 12 features, the layer expects 13") and the parameters,
    output and 2·N·in·out FLOPs are charged to the limits before anything is allocated.
    """
    settings, devices = settings_of(request), devices_of(request)
    device = devices.resolve(body.device)
    spec = LinearSpec(body.in_features, body.out_features, body.bias)

    def prepare() -> _LinearInputs:
        inputs = _LinearInputs(
            input=decode_tensor(
                body.input.root, max_elements=settings.limits.max_elements, where="input"
            ),
            weight=_decode(body.weight, settings, "weight"),
            bias=_decode(body.bias_values, settings, "bias_values"),
        )
        plan_linear(
            spec,
            inputs.input.shape,
            Budget.from_settings(settings),
            weight_shape=None if inputs.weight is None else inputs.weight.shape,
            bias_shape=None if inputs.bias is None else inputs.bias.shape,
        )
        return inputs

    def compute(inputs: _LinearInputs, deadline: Deadline) -> dict[str, Any]:
        result = linear_forward(
            spec,
            inputs.input,
            weight=inputs.weight,
            bias=inputs.bias,
            seed=body.seed,
            device=device,
            deadline=deadline,
        )
        return {"output": result.output, "weight": result.weight, "bias": result.bias}

    return FastJSONResponse(
        await run_compute_legacy(request, device, prepare, compute, encoding=encoding)
    )


@dataclass(frozen=True)
class _RNNInputs:
    input: torch.Tensor
    h0: torch.Tensor | None
    c0: torch.Tensor | None
    weights: dict[str, torch.Tensor]


@router.post(
    "/layers/rnn",
    operation_id="rnn_layer",
    summary="An RNN, LSTM or GRU forward pass",
    response_model=RNNResponse,
    response_class=FastJSONResponse,
)
async def rnn_layer(
    body: RNNRequest, request: Request, encoding: EncodingDep = "json"
) -> FastJSONResponse:
    """`torch.nn.RNN`, `LSTM` or `GRU` (by `mode`) applied to `input` with initial states
    `h0` (and `c0`), default zeros (chapter 6.4).

    Parameters given in `weights` (torch's names) are used as given; the others are
    initialised as `torch.manual_seed(seed)` followed by building the module initialises them
    (random without a seed). The response lists every parameter's shape and, unless
    `return_weights` is false, its values. Shapes are checked in the layer's terms ("h0 has
    shape [1, 3, 20], an LSTM with num_layers=2, bidirectional … expects [4, 3, 20]"); the
    parameters, states, outputs and the gate multiplications of every step, layer and
    direction are charged to the limits before anything is allocated.
    """
    settings, devices = settings_of(request), devices_of(request)
    device = devices.resolve(body.device)
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

    def prepare() -> _RNNInputs:
        weights = {
            name: decode_tensor(
                value.root, max_elements=settings.limits.max_elements, where=f"weights.{name}"
            )
            for name, value in (body.weights or {}).items()
        }
        inputs = _RNNInputs(
            input=decode_tensor(
                body.input.root, max_elements=settings.limits.max_elements, where="input"
            ),
            h0=_decode(body.h0, settings, "h0"),
            c0=_decode(body.c0, settings, "c0"),
            weights=weights,
        )
        plan_rnn(
            spec,
            inputs.input.shape,
            Budget.from_settings(settings),
            h0_shape=None if inputs.h0 is None else inputs.h0.shape,
            c0_shape=None if inputs.c0 is None else inputs.c0.shape,
            weight_shapes={name: value.shape for name, value in weights.items()},
        )
        return inputs

    def compute(inputs: _RNNInputs, deadline: Deadline) -> dict[str, Any]:
        result = rnn_forward(
            spec,
            inputs.input,
            h0=inputs.h0,
            c0=inputs.c0,
            weights=inputs.weights,
            seed=body.seed,
            device=device,
            deadline=deadline,
        )
        return {
            "output": result.output,
            "h_n": result.h_n,
            "c_n": result.c_n,
            "parameters": {name: list(value.shape) for name, value in result.parameters.items()},
            "weights": result.parameters if body.return_weights else None,
        }

    return FastJSONResponse(
        await run_compute_legacy(request, device, prepare, compute, encoding=encoding)
    )
