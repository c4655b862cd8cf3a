"""``POST /grad``: decode, parse and plan the expression against the limits, differentiate."""

from __future__ import annotations

import time

import torch
from fastapi import APIRouter, Request

from schemas.autograd import GradRequest, GradResponse
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.codec import decode_tensor, dumps, encode_tensor
from service.config import Settings
from service.deps import EncodingDep, devices_of, settings_of
from service.limits import Budget, Deadline
from service.ops.autograd import GradientPlan, compute_gradient, plan_gradient

router = APIRouter(route_class=ORJSONRoute, tags=["autograd"], responses=COMPUTE_ERRORS)

# A request this small is planned, and if tiny also run, on the event loop: a thread hop
# would cost more than the work (as for /tensor/ops).
INLINE_BODY_BYTES = 16 * 1024
INLINE_ELEMENTS = 4096
INLINE_FLOPS = 1e5
INLINE_EXPRESSION_CHARS = 256


def _plan(body: GradRequest, settings: Settings) -> GradientPlan:
    inputs = {
        name: decode_tensor(t.root, max_elements=settings.max_elements, where=f"inputs.{name}")
        for name, t in body.inputs.items()
    }
    return plan_gradient(
        body.expression,
        inputs,
        body.wrt,
        hessian=body.hessian,
        budget=Budget.from_settings(settings),
    )


def _is_tiny(plan: GradientPlan) -> bool:
    return plan.budget.elements <= INLINE_ELEMENTS and plan.budget.flops <= INLINE_FLOPS


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
    # Small requests are decoded and planned here; big ones in the compute thread.
    small = (
        int(request.headers.get("content-length") or "0") <= INLINE_BODY_BYTES
        and len(body.expression) <= INLINE_EXPRESSION_CHARS
    )
    planned = _plan(body, settings) if small else None

    def compute(deadline: Deadline) -> bytes:
        plan = planned or _plan(body, settings)
        start = time.perf_counter()
        result = compute_gradient(plan, device=device, deadline=deadline)
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        content = {
            "value": encode_tensor(result.value, encoding),
            "grads": {name: encode_tensor(g, encoding) for name, g in result.grads.items()},
            "device": str(device),
            "elapsed_ms": elapsed_ms,
        }
        if result.hessians is not None:
            content["hessians"] = {
                a: {b: encode_tensor(block, encoding) for b, block in row.items()}
                for a, row in result.hessians.items()
            }
        return dumps(content)

    inline = planned is not None and _is_tiny(planned) and device == torch.device("cpu")
    return FastJSONResponse(await devices.run(compute, [device], autograd=True, inline=inline))
