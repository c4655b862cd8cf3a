"""``POST /grad``: decode, parse and plan the expression against the limits, differentiate."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.autograd import GradRequest, GradResponse
from service.api.compute import compute_context, run_compute
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.deps import EncodingDep
from service.ops.autograd.handlers import compute_grad, prepare_grad

router = APIRouter(route_class=ORJSONRoute, tags=["autograd"], responses=COMPUTE_ERRORS)

INLINE_EXPRESSION_CHARS = 256
"""Longest expression planned on the event loop: planning walks it on the meta device."""


@router.post(
    "/grad",
    operation_id="grad",
    summary="Value and gradients of an expression",
    response_model=GradResponse,
    response_class=FastJSONResponse,
)
async def grad(body: GradRequest, request: Request, encoding: EncodingDep = "json") -> Response:
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
    ctx = compute_context(request, body.device)
    return await run_compute(
        request,
        ctx,
        partial(prepare_grad, body=body),
        compute_grad,
        encoding=encoding,
        autograd=True,
        prepare_on_loop=len(body.expression) <= INLINE_EXPRESSION_CHARS,
        inline_when_tiny=True,
    )
