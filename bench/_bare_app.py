"""The service's app plus two bare routes, for ``bench/overhead.py``.

``POST /bare`` returns ``{"ok": true}`` from a plain ``async def``: it shares the process,
the middleware and the configuration with ``POST /tensor/ops``, so the difference between
the two is what the tensor route itself costs.

``POST /bare/program`` takes ``/tensor/ops``'s body as that route does (the fast lane of
:mod:`service.api.lane`: read, parsed and validated against ``TensorOpsRequest``) and
answers the tiny program's result without running anything: the difference between it and
``/tensor/ops`` is the work of a program (its plan, its run and its answer's encoding).
``POST /bare/planned`` also plans the program, as ``/tensor/ops`` does (its context, its
inputs decoded, its plan charged, from the plan cache when it was planned before), and
answers without running it: that splits the program's work into its plan, and its run
with the answer's encoding.

    uvicorn bench._bare_app:app
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.tensors import TensorOpsRequest
from service.api.compute import compute_context
from service.api.responses import FastJSONResponse
from service.api.routing import ORJSONRoute, include_routers
from service.main import create_app
from service.ops.tensors.handlers import prepare_tensor_ops

app = create_app()

ARANGE_4 = {
    "outputs": {"out": {"shape": [4], "dtype": "int64", "data": [0, 1, 2, 3]}},
    "device": "cpu",
    "elapsed_ms": 0.0,
}
"""What ``/tensor/ops`` answers to ``{"steps": [{"op": "arange", "end": 4}]}``."""


@app.post("/bare")
async def bare() -> dict[str, bool]:
    return {"ok": True}


program_router = APIRouter(route_class=ORJSONRoute)


@program_router.post("/bare/program")
async def bare_program(body: TensorOpsRequest, request: Request) -> Response:
    return FastJSONResponse(ARANGE_4)


@program_router.post("/bare/planned")
async def bare_planned(body: TensorOpsRequest, request: Request) -> Response:
    prepare_tensor_ops(compute_context(request, body.device), body)
    return FastJSONResponse(ARANGE_4)


include_routers(app, [program_router])
