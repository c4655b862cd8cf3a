"""``GET /activate`` lists the activation functions; ``POST /activate`` evaluates them, with
derivatives, as JSON or as the tutorial's figure of one panel per function (chapter 6.3)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.activations import ActivateRequest, ActivateResponse, ActivationListResponse
from service.api.compute import compute_context, run_compute
from service.api.responses import READ_ERRORS, FastJSONResponse, png_or_json
from service.api.routing import ORJSONRoute
from service.deps import EncodingDep, settings_of
from service.ops.nn.handlers import activation_listing, compute_activate, prepare_activate

router = APIRouter(route_class=ORJSONRoute, tags=["activations"])


@router.get(
    "/activate",
    operation_id="list_activations",
    summary="List the activation functions",
    response_model=ActivationListResponse,
    responses=READ_ERRORS,
)
async def list_activations(request: Request) -> ActivationListResponse:
    """Every function `POST /activate` takes: its `torch.nn.functional` name and `torch.nn`
    class name, its formula (plain text and LaTeX), its parameters with torch's defaults,
    its output range and what its derivative holds."""
    return activation_listing(settings_of(request).limits.max_plot_points)


@router.post(
    "/activate",
    operation_id="activate",
    summary="Evaluate, differentiate or plot activation functions",
    response_model=ActivateResponse,
    response_class=FastJSONResponse,
    responses=png_or_json(ActivateResponse, "one panel per function, y and dy/dx", panels=True),
)
async def activate(
    body: ActivateRequest, request: Request, encoding: EncodingDep = "json"
) -> Response:
    """`function` or `functions` (default: the tutorial's sigmoid, tanh, relu and softplus)
    over `x` or a `range` (default `torch.linspace(-6, 6, 100)`), with `params` and, with
    `derivative`, dy/dx by autograd.

    `"format": "png"` draws the tutorial's figure: one panel per function, titled with its
    `torch.nn` class name (and the parameters that differ from torch's defaults), y in red,
    dy/dx dashed blue, grids on; `X-Panel-Count` and `X-Panel-Layout` describe the grid.
    """
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_activate, body=body)
    return await run_compute(
        request, ctx, prepare, compute_activate, encoding=encoding, autograd=body.derivative
    )
