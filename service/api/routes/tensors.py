"""``POST /tensor/ops``: decode, check limits, run the program, encode."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from schemas.common import Tensor
from schemas.tensors import TensorOpsRequest, TensorOpsResponse
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.codec import Encoding, decode_tensor, encode_tensor
from service.config import Settings
from service.deps import Authorized, DevicesDep, EncodingDep, SettingsDep
from service.errors import LimitExceeded
from service.limits import Budget, Deadline
from service.ops.program import run_program

router = APIRouter(
    route_class=ORJSONRoute, tags=["tensors"], dependencies=[Authorized], responses=COMPUTE_ERRORS
)


def _decode_arg(value: Any, settings: Settings, where: str) -> Any:
    if isinstance(value, Tensor):
        return decode_tensor(value.root, max_elements=settings.max_elements, where=where)
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


def _encode(value: Any, encoding: Encoding) -> Any:
    return value if isinstance(value, dict) else encode_tensor(value, encoding)


@router.post(
    "/tensor/ops",
    operation_id="tensor_ops",
    summary="Run a program of tensor steps",
    response_model=TensorOpsResponse,
    response_class=FastJSONResponse,
)
async def tensor_ops(
    body: TensorOpsRequest,
    settings: SettingsDep,
    devices: DevicesDep,
    encoding: EncodingDep = "json",
) -> FastJSONResponse:
    """Named `inputs`, then `steps` in order (each op with torch's parameter names), then the
    tensors named in `return` (default: what the last step stored).

    Every step's output shape and dtype are worked out before anything runs (on torch's
    `meta` device), so a program over the element or FLOP limit is a 413 in milliseconds.
    The tutorial's chapter 3 is the example: `arange(16).reshape(2, 2, -1)[:, 1, :-1]` and
    `cat`.
    """
    if len(body.steps) > settings.max_steps:
        raise LimitExceeded("max_steps", settings.max_steps, len(body.steps), "the program")
    device = devices.resolve(body.device)

    def compute(deadline: Deadline) -> bytes:
        inputs = {
            name: decode_tensor(t.root, max_elements=settings.max_elements, where=f"inputs.{name}")
            for name, t in body.inputs.items()
        }
        steps = _plain_steps(body, settings)
        start = time.perf_counter()
        outputs = run_program(
            inputs,
            steps,
            body.returns,
            device=device,
            budget=Budget.from_settings(settings),
            deadline=deadline,
            seed=body.seed,
        )
        devices.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1000
        return FastJSONResponse(None).render(
            {
                "outputs": {name: _encode(value, encoding) for name, value in outputs.items()},
                "device": str(device),
                "elapsed_ms": elapsed_ms,
            }
        )

    return FastJSONResponse(await devices.run(compute, [device]))
