"""``POST /tensor/ops``."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.tensors import TensorOpsRequest, TensorOpsResponse
from service.api.compute import compute_context, run_compute
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.deps import EncodingDep
from service.ops.tensors.handlers import compute_tensor_ops, prepare_tensor_ops

router = APIRouter(route_class=ORJSONRoute, tags=["tensors"], responses=COMPUTE_ERRORS)


@router.post(
    "/tensor/ops",
    operation_id="tensor_ops",
    summary="Run a program of tensor steps",
    response_model=TensorOpsResponse,
    response_class=FastJSONResponse,
)
async def tensor_ops(
    body: TensorOpsRequest, request: Request, encoding: EncodingDep = "json"
) -> Response:
    """Named `inputs`, then `steps` in order (each op with torch's parameter names), then the
    tensors named in `return` (default: what the last step stored).

    Every step's output shape and dtype are worked out before anything runs (on torch's
    `meta` device), so a program over the element or FLOP limit is a 413 in milliseconds.
    That plan depends on the inputs' shapes and dtypes, not on their values: a short program
    sent again with inputs of the same shapes is charged what it was, without planning again.
    The tutorial's chapter 3 is the example: `arange(16).reshape(2, 2, -1)[:, 1, :-1]` and
    `cat`.
    """
    ctx = compute_context(request, body.device)
    prepare = partial(prepare_tensor_ops, body=body)
    return await run_compute(
        request, ctx, prepare, compute_tensor_ops, encoding=encoding, inline_when_tiny=True
    )
