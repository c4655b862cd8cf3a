"""``POST /benchmark``: the tutorial's matrix multiply on each device."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from schemas.benchmark import BenchmarkRequest, BenchmarkResponse
from service.api.compute import run_compute
from service.api.events import streams, with_events
from service.api.responses import COMPUTE_ERRORS, FastJSONResponse
from service.api.routing import ORJSONRoute
from service.calibration import Calibrations
from service.deps import devices_of, settings_of
from service.ops.benchmark.handlers import (
    benchmark_devices,
    compute_benchmark,
    prepare_benchmark,
)
from service.ops.context import ComputeContext

router = APIRouter(route_class=ORJSONRoute, tags=["benchmark"], responses=COMPUTE_ERRORS)


@router.post(
    "/benchmark",
    operation_id="benchmark",
    summary="Time a matrix multiply per device",
    response_model=BenchmarkResponse,
    response_class=FastJSONResponse,
    responses=with_events({200: {"description": "The timings of each device."}}),
)
async def benchmark(body: BenchmarkRequest, request: Request) -> Response:
    """`c = a @ b` with a [m, k] and b [k, n] (default the tutorial's 10000×1000 @
    1000×2000) on each device: the cold first run, then median/min/max of timed repeats
    after warm-up (CUDA synchronised and timed with events), GFLOP/s and the product's norm.

    Every multiplication of every device counts against the FLOP limit, and its time at
    the device's measured rate for the dtype against the time limit (413
    `over_time_budget` before anything runs).
    """
    manager = devices_of(request)
    targets = benchmark_devices(body, manager)
    calibrations: Calibrations = request.app.state.calibrations
    rates = [calibrations.get(device) for device in targets]
    ctx = ComputeContext(settings_of(request).limits, targets[0], rates[0])
    prepare = partial(
        prepare_benchmark,
        body=body,
        devices=targets,
        cuda_available=manager.cuda_count > 0,
        throughputs=rates,
    )
    stream = streams(request)
    return await run_compute(
        request, ctx, prepare, compute_benchmark, devices=targets, stream=stream
    )
