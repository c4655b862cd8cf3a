"""``POST /benchmark``: the tutorial's matrix multiply on each device."""

from __future__ import annotations

import time

import torch
from fastapi import APIRouter, Request

from schemas.benchmark import BenchmarkRequest, BenchmarkResponse
from service.api.responses import COMPUTE_ERRORS
from service.api.routing import ORJSONRoute
from service.codec import DTYPES
from service.deps import devices_of, settings_of
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.benchmark.matmul import matmul_benchmark, max_norm_rel_diff

router = APIRouter(route_class=ORJSONRoute, tags=["benchmark"], responses=COMPUTE_ERRORS)


@router.post("/benchmark", operation_id="benchmark", summary="Time a matrix multiply per device")
async def benchmark(body: BenchmarkRequest, request: Request) -> BenchmarkResponse:
    """`c = a @ b` with a [m, k] and b [k, n] (default the tutorial's 10000×1000 @
    1000×2000) on each device: the cold first run, then median/min/max of timed repeats
    after warm-up (CUDA synchronised and timed with events), GFLOP/s and the product's norm.

    Every multiplication of every device counts against the FLOP limit.
    """
    settings, devices = settings_of(request), devices_of(request)
    if body.devices:
        targets = [devices.resolve(name) for name in body.devices]
    elif body.device is not None:
        targets = [devices.resolve(body.device)]
    else:
        targets = [torch.device(name) for name in devices.available]
    targets = list(dict.fromkeys(targets))
    budget = Budget.from_settings(settings)
    runs = (1 + body.warmup + body.repeats) * len(targets)
    per_run = estimate_matmul_flops((body.m, body.k), (body.k, body.n))
    for shape, name in (((body.m, body.k), "a"), ((body.k, body.n), "b"), ((body.m, body.n), "c")):
        budget.charge_tensor(shape[0] * shape[1], f"matrix {name} of shape {list(shape)}")
    budget.charge_flops(per_run * runs, f"{runs} multiplications of {per_run:,} FLOPs")
    dtype = DTYPES[body.dtype]

    def compute(deadline: Deadline) -> tuple[list[dict[str, object]], float]:
        start = time.perf_counter()
        results = matmul_benchmark(
            body.m,
            body.k,
            body.n,
            dtype,
            targets,
            repeats=body.repeats,
            warmup=body.warmup,
            seed=body.seed,
            deadline=deadline,
        )
        return results, (time.perf_counter() - start) * 1000

    results, elapsed_ms = await devices.run(compute, targets)
    return BenchmarkResponse.model_validate(
        {
            "device": ",".join(str(t) for t in targets),
            "elapsed_ms": elapsed_ms,
            "torch_version": torch.__version__,
            "cuda_available": devices.cuda_count > 0,
            "m": body.m,
            "k": body.k,
            "n": body.n,
            "dtype": body.dtype,
            "flops_per_run": per_run,
            "results": results,
            "max_norm_rel_diff": max_norm_rel_diff(results),
        }
    )
