"""``POST /layers/linear`` and ``POST /layers/rnn``: a layer's forward pass."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.layers import LinearRequest, LinearResponse, RNNRequest, RNNResponse
from service.api.compute import compute_context, run_compute
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.deps import EncodingDep
from service.ops.nn.handlers import (
    compute_linear_layer,
    compute_rnn_layer,
    prepare_linear_layer,
    prepare_rnn_layer,
)

router = APIRouter(route_class=ORJSONRoute, tags=["layers"], responses=COMPUTE_ERRORS)


@router.post(
    "/layers/linear",
    operation_id="linear_layer",
    summary="A fully connected layer's forward pass",
    response_model=LinearResponse,
    response_class=FastJSONResponse,
)
async def linear_layer(
    body: LinearRequest, request: Request, encoding: EncodingDep = "json"
) -> Response:
    """`torch.nn.Linear(in_features, out_features, bias)(input)` = input·Wᵀ + b (chapter 6.5).

    `weight` and `bias_values` are used as given; those not given are initialised as
    `torch.manual_seed(seed); torch.nn.Linear(in_features, out_features)` initialises them
    (random without a seed). The response returns the parameters used. Shapes are checked in
    the layer's terms ("input has 12 features, the layer expects 13") and the parameters,
    output and 2·N·in·out FLOPs are charged to the limits before anything is allocated.
    """
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_linear_layer, body=body)
    return await run_compute(request, ctx, prepare, compute_linear_layer, encoding=encoding)


@router.post(
    "/layers/rnn",
    operation_id="rnn_layer",
    summary="An RNN, LSTM or GRU forward pass",
    response_model=RNNResponse,
    response_class=FastJSONResponse,
)
async def rnn_layer(body: RNNRequest, request: Request, encoding: EncodingDep = "json") -> Response:
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
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_rnn_layer, body=body)
    return await run_compute(request, ctx, prepare, compute_rnn_layer, encoding=encoding)
