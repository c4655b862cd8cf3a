"""``POST /benchmark`` without HTTP: the request checked against the limits, then timed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from schemas.benchmark import BenchmarkRequest
from service.codec import DTYPES
from service.device import DeviceManager
from service.limits import Deadline, estimate_matmul_flops
from service.ops.benchmark.matmul import matmul_benchmark, max_norm_rel_diff
from service.ops.context import ComputeContext


@dataclass
class BenchmarkPlan:
    """A benchmark admitted by the limits: the sizes, the devices and how often to multiply."""

    m: int
    k: int
    n: int
    dtype: str
    devices: list[torch.device]
    repeats: int
    warmup: int
    seed: int | None
    flops_per_run: int
    cuda_available: bool


def benchmark_devices(body: BenchmarkRequest, manager: DeviceManager) -> list[torch.device]:
    """The devices to time, each once, in order: ``devices``, else ``device``, else every
    available one. A device this machine does not have is a 422."""
    if body.devices:
        targets = [manager.resolve(name) for name in body.devices]
    elif body.device is not None:
        targets = [manager.resolve(body.device)]
    else:
        targets = [torch.device(name) for name in manager.available]
    return list(dict.fromkeys(targets))


def prepare_benchmark(
    ctx: ComputeContext,
    body: BenchmarkRequest,
    devices: list[torch.device],
    cuda_available: bool,
) -> BenchmarkPlan:
    """Charge the three matrices and every multiplication on every device (the cold one,
    the warm-up and the timed repeats) to the budget."""
    runs = (1 + body.warmup + body.repeats) * len(devices)
    per_run = estimate_matmul_flops((body.m, body.k), (body.k, body.n))
    for shape, name in (((body.m, body.k), "a"), ((body.k, body.n), "b"), ((body.m, body.n), "c")):
        ctx.budget.charge_tensor(shape[0] * shape[1], f"matrix {name} of shape {list(shape)}")
    ctx.budget.charge_flops(per_run * runs, f"{runs} multiplications of {per_run:,} FLOPs")
    return BenchmarkPlan(
        m=body.m,
        k=body.k,
        n=body.n,
        dtype=body.dtype,
        devices=devices,
        repeats=body.repeats,
        warmup=body.warmup,
        seed=body.seed,
        flops_per_run=per_run,
        cuda_available=cuda_available,
    )


def compute_benchmark(plan: BenchmarkPlan, deadline: Deadline) -> dict[str, Any]:
    """Time the multiplication on each device and compare the products' norms."""
    results = matmul_benchmark(
        plan.m,
        plan.k,
        plan.n,
        DTYPES[plan.dtype],
        plan.devices,
        repeats=plan.repeats,
        warmup=plan.warmup,
        seed=plan.seed,
        deadline=deadline,
    )
    return {
        "torch_version": torch.__version__,
        "cuda_available": plan.cuda_available,
        "m": plan.m,
        "k": plan.k,
        "n": plan.n,
        "dtype": plan.dtype,
        "flops_per_run": plan.flops_per_run,
        "results": results,
        "max_norm_rel_diff": max_norm_rel_diff(results),
    }
