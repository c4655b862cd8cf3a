"""``POST /tensor/ops``: decode, plan against the limits, run the program, encode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from schemas.common import Tensor
from schemas.tensors import TensorOpsRequest, TensorOpsResponse
from service.api.compute import run_compute
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.codec import decode_tensor
from service.config import Settings
from service.deps import EncodingDep, devices_of, settings_of
from service.errors import LimitExceeded
from service.limits import Budget, Deadline
from service.ops.program import plan_program, run_program

router = APIRouter(route_class=ORJSONRoute, tags=["tensors"], responses=COMPUTE_ERRORS)


def _decode_arg(value: Any, settings: Settings, where: str) -> Any:
    if isinstance(value, Tensor):
        return decode_tensor(value.root, max_elements=settings.limits.max_elements, where=where)
    if isinstance(value, list):
        return [_decode_arg(item, settings, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _plain_steps(body: TensorOpsRequest, settings: Settings) -> list[dict[str, Any]]:
    # Field by field, not model_dump(): inline tensors must not be copied element by element.
    return [
        {
            name: _decode_arg(getattr(step, name), settings, f"steps.{number}.{name}")
            for name in type(step).model_fields
        }
        for number, step in enumerate(body.steps)
    ]


class _Program:
    """One request's program: decoded, then planned against the limits."""

    def __init__(self, body: TensorOpsRequest, settings: Settings) -> None:
        self.inputs = {
            name: decode_tensor(
                t.root, max_elements=settings.limits.max_elements, where=f"inputs.{name}"
            )
            for name, t in body.inputs.items()
        }
        self.steps = _plain_steps(body, settings)
        self.budget = Budget.from_settings(settings)
        self.names = plan_program(self.inputs, self.steps, body.returns, self.budget)


@router.post(
    "/tensor/ops",
    operation_id="tensor_ops",
    summary="Run a program of tensor steps",
    response_model=TensorOpsResponse,
    response_class=FastJSONResponse,
)
async def tensor_ops(
    body: TensorOpsRequest, request: Request, encoding: EncodingDep = "json"
) -> FastJSONResponse:
    """Named `inputs`, then `steps` in order (each op with torch's parameter names), then the
    tensors named in `return` (default: what the last step stored).

    Every step's output shape and dtype are worked out before anything runs (on torch's
    `meta` device), so a program over the element or FLOP limit is a 413 in milliseconds.
    The tutorial's chapter 3 is the example: `arange(16).reshape(2, 2, -1)[:, 1, :-1]` and
    `cat`.
    """
    settings, devices = settings_of(request), devices_of(request)
    if len(body.steps) > settings.limits.max_steps:
        raise LimitExceeded("max_steps", settings.limits.max_steps, len(body.steps), "the program")
    device = devices.resolve(body.device)

    def compute(program: _Program, deadline: Deadline) -> dict[str, Any]:
        outputs = run_program(
            program.inputs,
            program.steps,
            program.names,
            device=device,
            deadline=deadline,
            seed=body.seed,
            max_elements=settings.limits.max_elements,
        )
        return {"outputs": outputs}

    content = await run_compute(
        request,
        device,
        lambda: _Program(body, settings),
        compute,
        encoding=encoding,
        budget=lambda program: program.budget,
    )
    return FastJSONResponse(content)
