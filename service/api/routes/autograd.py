"""``POST /grad``: decode, parse and plan the expression against the limits, differentiate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from schemas.autograd import GradRequest, GradResponse
from service.api.compute import run_compute_legacy
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.codec import decode_tensor
from service.config import Settings
from service.deps import EncodingDep, devices_of, settings_of
from service.limits import Budget, Deadline
from service.ops.autograd.gradients import GradientPlan, compute_gradient, plan_gradient

router = APIRouter(route_class=ORJSONRoute, tags=["autograd"], responses=COMPUTE_ERRORS)

INLINE_EXPRESSION_CHARS = 256


def _plan(body: GradRequest, settings: Settings) -> GradientPlan:
    inputs = {
        name: decode_tensor(
            t.root, max_elements=settings.limits.max_elements, where=f"inputs.{name}"
        )
        for name, t in body.inputs.items()
    }
    return plan_gradient(
        body.expression,
        inputs,
        body.wrt,
        hessian=body.hessian,
        budget=Budget.from_settings(settings),
    )


@router.post(
    "/grad",
    operation_id="grad",
    summary="Value and gradients of an expression",
    response_model=GradResponse,
    response_class=FastJSONResponse,
)
async def grad(
    body: GradRequest, request: Request, encoding: EncodingDep = "json"
) -> FastJSONResponse:
    """The tutorial's chapter 5 as a service: `expression` is written in a small subset of
    Python over the named `inputs` (see the field's description for the grammar and the
    functions), and must come to a single number. The response has its `value` and, for each
    input in `wrt` (default: every floating-point input), the gradient ∂value/∂input with
    the input's shape; with `"hessian": true` also every second derivative
    `hessians[a][b]` = ∂²value/∂a∂b.

    `sum(x**2 + 2*x + 1)` at `x = [[1.0], [2.0], [3.0], [4.0]]` is 54 with gradient
    2x + 2 = `[[4], [6], [8], [10]]` (the tutorial prints a wrong gradient).

    The expression is checked and evaluated on torch's `meta` device first, so an expression
    over the element or FLOP limit is a 413 before anything is computed. Errors: a
    non-scalar value (422 `not_scalar`, suggests `sum(...)`), a gradient of an integer
    tensor (422 `integer_gradient`), an unknown name or function (422 `unknown_name`,
    `unknown_function`, listing the allowed ones), a syntax error (422 `expression_syntax`
    with `details.column`), a construct outside the language (422
    `expression_not_allowed`), torch refusing an operation (422 `op_failed`, with the
    column).
    """
    settings, devices = settings_of(request), devices_of(request)
    device = devices.resolve(body.device)

    def compute(plan: GradientPlan, deadline: Deadline) -> dict[str, Any]:
        result = compute_gradient(plan, device=device, deadline=deadline)
        content: dict[str, Any] = {"value": result.value, "grads": result.grads}
        if result.hessians is not None:
            content["hessians"] = result.hessians
        return content

    content = await run_compute_legacy(
        request,
        device,
        lambda: _plan(body, settings),
        compute,
        encoding=encoding,
        autograd=True,
        budget=lambda plan: plan.budget,
        # Planning walks the expression on the meta device: only short ones on the loop.
        cheap_to_prepare=len(body.expression) <= INLINE_EXPRESSION_CHARS,
    )
    return FastJSONResponse(content)
