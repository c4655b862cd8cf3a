"""``GET /activate`` lists the activation functions; ``POST /activate`` evaluates them, with
derivatives, as JSON or as the tutorial's figure of one panel per function (chapter 6.3)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.activations import (
    MAX_FUNCTIONS,
    ActivateRequest,
    ActivateResponse,
    ActivationInfo,
    ActivationListResponse,
    ActivationParamInfo,
    ActivationRange,
)
from service.api.compute import run_compute_legacy
from service.api.responses import (
    READ_ERRORS,
    FastJSONResponse,
    png_or_json,
    png_response,
)
from service.api.routing import ORJSONRoute
from service.codec import DTYPES, decode_tensor
from service.deps import EncodingDep, devices_of, settings_of
from service.errors import OpError
from service.limits import Budget, Deadline
from service.ops.nn.activations import (
    ACTIVATIONS,
    DEFAULT_FUNCTIONS,
    Activation,
    BoundActivation,
    Evaluation,
    as_input,
    bind,
    charge,
    evaluate,
)
from service.ops.render.plots import MAX_POINTS, Line, Panel, check_points, line_panels, panel_grid

router = APIRouter(route_class=ORJSONRoute, tags=["activations"])

PANEL_HEADERS = {
    "X-Panel-Count": {
        "description": 'With `"format": "png"`: the number of panels (one per function).',
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-Panel-Layout": {
        "description": 'With `"format": "png"`: the grid, `<rows>x<columns>`; each panel is '
        "350×300 pixels, so the image is 350·columns × 300·rows.",
        "schema": {"type": "string", "pattern": r"^\d+x\d+$"},
    },
}


@functools.cache
def _listing() -> ActivationListResponse:
    return ActivationListResponse(
        functions=[_info(activation) for activation in ACTIVATIONS],
        default_functions=list(DEFAULT_FUNCTIONS),
        default_range=ActivationRange(),
        max_functions=MAX_FUNCTIONS,
        max_plot_points=MAX_POINTS,
    )


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


@router.get(
    "/activate",
    operation_id="list_activations",
    summary="List the activation functions",
    response_model=ActivationListResponse,
    responses=READ_ERRORS,
)
async def list_activations() -> ActivationListResponse:
    """Every function `POST /activate` takes: its `torch.nn.functional` name and `torch.nn`
    class name, its formula (plain text and LaTeX), its parameters with torch's defaults,
    its output range and what its derivative holds."""
    return _listing()


def _requests(body: ActivateRequest) -> list[tuple[str, Mapping[str, object]]]:
    if body.function is not None:
        return [(body.function, {})]
    if body.functions is None:
        return [(name, {}) for name in DEFAULT_FUNCTIONS]
    return [
        (item, {}) if isinstance(item, str) else (item.function, item.params)
        for item in body.functions
    ]


def _inputs(body: ActivateRequest, max_elements: int, budget: Budget) -> torch.Tensor:
    """x decoded, or the range built (after its size is charged), on the CPU."""
    if body.x is not None:
        x = decode_tensor(body.x.root, max_elements=max_elements, where="x")
        budget.charge_tensor(x.numel(), "x")
        return x
    spec = body.range or ActivationRange()
    budget.charge_tensor(spec.steps, f"range of {spec.steps:,} steps")
    try:
        return torch.linspace(spec.start, spec.end, spec.steps, dtype=DTYPES[spec.dtype])
    except RuntimeError as exc:  # start or end beyond the dtype's range
        raise OpError(f"range: {exc}", details={"dtype": spec.dtype}) from exc


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
    settings, devices = settings_of(request), devices_of(request)
    device = devices.resolve(body.device)
    shared: dict[str, object] = dict(body.params)
    if body.dim is not None:
        shared["dim"] = body.dim
    functions = bind(_requests(body), shared)
    png = body.format == "png"

    def admit() -> torch.Tensor:
        """The inputs, once every output and the plot fit the limits."""
        budget = Budget.from_settings(settings)
        x = as_input(_inputs(body, settings.limits.max_elements, budget))
        charge(functions, x, budget, derivative=body.derivative)
        if png:
            lines = 2 if body.derivative else 1
            check_points(
                x.numel() * lines * len(functions),
                f"a PNG of {len(functions)} panels of {lines} × {x.numel():,} points",
            )
        return x

    def compute(x: torch.Tensor, deadline: Deadline) -> dict[str, Any] | bytes:
        on_device = x.to(device)
        evaluations = []
        for bound in functions:
            deadline.check()
            evaluations.append(
                evaluate(bound, on_device, derivative=body.derivative, deadline=deadline)
            )
        if png:
            return line_panels(_panels(functions, x, evaluations), columns=body.columns)
        return {
            "results": [
                {
                    "function": bound.name,
                    "params": bound.params,
                    "x": x,
                    "y": result.y,
                    "dydx": result.dydx,
                }
                for bound, result in zip(functions, evaluations, strict=True)
            ]
        }

    content = await run_compute_legacy(
        request, device, admit, compute, encoding=encoding, autograd=body.derivative
    )
    if not png:
        return FastJSONResponse(content)
    rows, columns = panel_grid(len(functions), body.columns)
    return png_response(
        content,
        headers={"X-Panel-Count": str(len(functions)), "X-Panel-Layout": f"{rows}x{columns}"},
    )


def _panels(
    functions: Sequence[BoundActivation], x: torch.Tensor, evaluations: Sequence[Evaluation]
) -> list[Panel]:
    """One panel per function, x flattened and sorted (a line plot over x)."""
    flat = x.reshape(-1).to(torch.float64)
    order = torch.argsort(flat, stable=True)
    xs = flat[order].numpy()

    def along(values: torch.Tensor) -> np.ndarray:
        return values.detach().cpu().reshape(-1).to(torch.float64)[order].numpy()

    panels = []
    for bound, result in zip(functions, evaluations, strict=True):
        if result.dydx is None:
            lines = [Line(xs, along(result.y), "r-")]
        else:
            lines = [
                Line(xs, along(result.y), "r-", "y"),
                Line(xs, along(result.dydx), "b--", "dy/dx"),
            ]
        panels.append(Panel(bound.title, lines))
    return panels
