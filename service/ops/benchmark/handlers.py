"""``POST /benchmark`` without HTTP: the request checked against the limits, then timed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from schemas.benchmark import BenchmarkRequest
from service.calibration import Throughput
from service.codec import DTYPES
from service.device import DeviceManager
from service.limits import (
    MATMUL_READ_PASSES,
    Budget,
    Deadline,
    estimate_matmul_flops,
    widened_product,
)
from service.ops.benchmark.matmul import matmul_benchmark, max_norm_rel_diff
from service.ops.context import ComputeContext

HALF_BENCHMARK_READ_PASSES = 8.0
"""Element passes per element read of a thin or long half product on a CPU, which the
benchmark runs in its own dtype: bfloat16 [2, 2²¹] @ [2²¹, 2] read 7.7 passes' worth."""
HALF_SCRATCH_PER_K = 32
"""float32 elements of scratch per step of the reduction of such a product: bfloat16 [2,
2²³] @ [2²³, 2] took 1 GB beside its 64 MB of operands."""

DRAW_PASSES = 16
"""Passes of a normal draw over each element of a and b (measured on a CPU: 16 to 35 times
a pass of x * 2)."""


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
    throughputs: Sequence[Throughput | None] | None = None,
) -> BenchmarkPlan:
    """Charge the three matrices and every multiplication on every device (the cold one,
    the warm-up and the timed repeats) to the budget: as FLOPs, and as time at each device's
    measured rate for the dtype (``throughputs``, one per device; a float16 product on a CPU
    is about a hundred times slower than a float32 one), so that a benchmark that would run
    past ``request_timeout_s`` is refused here, before anything is drawn or multiplied."""
    runs = 1 + body.warmup + body.repeats
    per_run = estimate_matmul_flops((body.m, body.k), (body.k, body.n))
    budget = ctx.budget
    for shape, name in (((body.m, body.k), "a"), ((body.k, body.n), "b"), ((body.m, body.n), "c")):
        budget.charge_shape(shape, f"matrix {name} of shape {list(shape)}")
    budget.charge_objects(runs * len(devices), f"{runs * len(devices)} timed multiplications")
    inputs = body.m * body.k + body.k * body.n
    dtype = DTYPES[body.dtype]
    rates = list(throughputs) if throughputs is not None else [None] * len(devices)
    # a and b are drawn once, on the CPU: at its rates when it is one of the devices.
    cpu = next((r for d, r in zip(devices, rates, strict=True) if d.type == "cpu"), None)
    with _timed_at(budget, cpu):
        budget.charge_elementwise(DRAW_PASSES * inputs, "drawing a and b")
    for device, rate in zip(devices, rates, strict=True):
        what = f"{runs} multiplications of {per_run:,} FLOPs in {body.dtype} on {device}"
        with _timed_at(budget, rate):
            budget.charge_flops(per_run * runs, what, dtype=dtype)
            # a and b converted and moved there, the product's norm read back.
            budget.charge_elementwise(2 * inputs + 2 * body.m * body.n, what)
            # The benchmark multiplies in its dtype, whatever the shape: a thin product is
            # bound by its reads, and a thin or long half one on a CPU by its own kernel.
            shapes = ((body.m, body.k), (body.k, body.n))
            half = widened_product(*shapes, dtype, device.type)
            passes = HALF_BENCHMARK_READ_PASSES if half else MATMUL_READ_PASSES
            budget.charge_elementwise(passes * inputs * runs, f"{what}: their reads")
            if half:
                budget.charge_tensors(HALF_SCRATCH_PER_K * body.k, f"{what}: its kernel's scratch")
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


@contextmanager
def _timed_at(budget: Budget, throughput: Throughput | None) -> Iterator[None]:
    """Charges inside are timed at ``throughput``'s rates (one device's work among several);
    ``None`` keeps the budget's own."""
    own = budget.throughput
    if throughput is not None:
        budget.throughput = throughput
    try:
        yield
    finally:
        budget.throughput = own


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
