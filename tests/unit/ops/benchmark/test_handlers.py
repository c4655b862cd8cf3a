"""``POST /benchmark`` without HTTP: device choice, admission against the limits, content."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from schemas.benchmark import BenchmarkRequest, BenchmarkResponse
from service.calibration import Throughput
from service.config import Limits, Settings
from service.device import DeviceManager
from service.errors import DeviceUnavailable, ErrorCode, LimitExceeded
from service.limits import Deadline, estimate_matmul_flops
from service.ops.benchmark.handlers import (
    BenchmarkPlan,
    benchmark_devices,
    compute_benchmark,
    prepare_benchmark,
)
from service.ops.context import ComputeContext

CPU = torch.device("cpu")
SETTINGS = Settings(device="cpu", max_elements=1 << 16, max_total_elements=1 << 18, max_flops=1e8)


def context() -> ComputeContext:
    return ComputeContext(SETTINGS.limits, CPU)


def request(**fields: Any) -> BenchmarkRequest:
    return BenchmarkRequest.model_validate({"m": 32, "k": 16, "n": 24, **fields})


def plan(body: BenchmarkRequest, devices: list[torch.device] | None = None) -> BenchmarkPlan:
    return prepare_benchmark(context(), body, devices or [CPU], cuda_available=False)


# --- the devices timed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"devices": ["cpu"]}, ["cpu"]),
        ({"devices": ["cpu", "cpu"]}, ["cpu"]),
        ({"device": "cpu"}, ["cpu"]),
        ({"devices": ["cpu"], "device": "auto"}, ["cpu"]),
    ],
)
def test_devices_asked_for(fields: dict[str, Any], expected: list[str]) -> None:
    manager = DeviceManager(SETTINGS)
    assert [str(d) for d in benchmark_devices(request(**fields), manager)] == expected


def test_default_devices_are_every_available_one() -> None:
    manager = DeviceManager(SETTINGS)
    assert [str(d) for d in benchmark_devices(request(), manager)] == manager.available


def test_an_absent_device_is_refused() -> None:
    manager = DeviceManager(SETTINGS)
    absent = f"cuda:{manager.cuda_count}"
    with pytest.raises(DeviceUnavailable) as refusal:
        benchmark_devices(request(devices=["cpu", absent]), manager)
    assert refusal.value.details["available"] == manager.available


# --- admission ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("warmup", "repeats", "devices"), [(0, 1, 1), (1, 5, 1), (2, 3, 2)])
def test_every_multiplication_on_every_device_is_charged(
    warmup: int, repeats: int, devices: int
) -> None:
    ctx = context()
    body = request(warmup=warmup, repeats=repeats)
    planned = prepare_benchmark(ctx, body, [CPU] * devices, cuda_available=False)
    per_run = estimate_matmul_flops((32, 16), (16, 24))
    assert planned.flops_per_run == per_run == 2 * 32 * 16 * 24
    assert ctx.budget.flops == per_run * (1 + warmup + repeats) * devices
    assert ctx.budget.elements == 32 * 16 + 16 * 24 + 32 * 24


def test_over_the_flop_limit_is_refused_with_the_total() -> None:
    body = request(m=200, k=200, n=200, warmup=1, repeats=5)
    with pytest.raises(LimitExceeded) as refusal:
        plan(body)
    assert refusal.value.details == {
        "limit": "max_flops",
        "allowed": SETTINGS.limits.max_flops,
        "requested": 2 * 200**3 * (1 + 1 + 5),
    }


@pytest.mark.parametrize(
    ("fields", "requested"),
    [({"m": 1 << 12, "k": 32}, (1 << 12) * 32), ({"k": 4, "n": 1 << 17}, 4 * (1 << 17))],
)
def test_a_matrix_over_the_element_limit_is_refused(fields: dict[str, Any], requested: int) -> None:
    with pytest.raises(LimitExceeded) as refusal:
        plan(request(**fields))
    assert refusal.value.details["limit"] == "max_elements"
    assert refusal.value.details["requested"] == requested


def test_the_plan_holds_what_the_work_needs() -> None:
    body = request(dtype="float64", seed=9, warmup=2, repeats=3)
    planned = prepare_benchmark(context(), body, [CPU], cuda_available=True)
    assert (planned.m, planned.k, planned.n, planned.dtype) == (32, 16, 24, "float64")
    assert (planned.seed, planned.warmup, planned.repeats) == (9, 2, 3)
    assert planned.devices == [CPU] and planned.cuda_available is True


# --- the content -------------------------------------------------------------------------------


def test_content_is_the_response_without_device_and_time() -> None:
    body = request(seed=4, repeats=2)
    content = compute_benchmark(plan(body), Deadline(30))
    response = BenchmarkResponse.model_validate({**content, "device": "cpu", "elapsed_ms": 1.0})
    assert response.torch_version == torch.__version__
    assert response.flops_per_run == 2 * 32 * 16 * 24
    assert response.max_norm_rel_diff is None
    [result] = response.results
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(32, 16, generator=generator), torch.randn(16, 24, generator=generator)
    expected = float(torch.linalg.vector_norm(torch.matmul(a, b), dtype=torch.float64))
    assert result.norm == pytest.approx(expected, rel=1e-6)


def test_two_devices_are_compared() -> None:
    content = compute_benchmark(plan(request(seed=1), [CPU, CPU]), Deadline(30))
    assert [r["device"] for r in content["results"]] == ["cpu", "cpu"]
    assert content["max_norm_rel_diff"] == 0.0


# --- time at each device's rate ----------------------------------------------------------------

# A calibrated CPU (float16 products 100 times slower than float32) and a fast accelerator.
CPU_RATES = Throughput("cpu", {"float32": 1e11, "float16": 1e9}, 1e9)
GPU_RATES = Throughput("cuda:0", {"float32": 1e14, "float16": 1e15}, 1e12)
ROOMY = Limits(max_elements=1 << 25, max_total_elements=1 << 27, max_flops=1e15)


def timed_plan(
    body: BenchmarkRequest, devices: list[torch.device], rates: list[Throughput]
) -> ComputeContext:
    ctx = ComputeContext(ROOMY, devices[0], rates[0])
    prepare_benchmark(ctx, body, devices, cuda_available=True, throughputs=rates)
    return ctx


def test_a_float16_benchmark_on_the_cpu_is_refused_in_milliseconds() -> None:
    """4096³ in float16, 7 runs at 1 GFLOP/s: 16 minutes, refused before anything is drawn."""
    body = BenchmarkRequest.model_validate({"m": 4096, "k": 4096, "n": 4096, "dtype": "float16"})
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as refusal:
        timed_plan(body, [CPU], [CPU_RATES])
    assert time.perf_counter() - start < 0.1
    assert refusal.value.code is ErrorCode.OVER_TIME_BUDGET
    assert refusal.value.limit == "request_timeout_s"
    assert refusal.value.details["requested"] >= 7 * 2 * 4096**3 / 1e9
    # The same benchmark in float32 is predicted at 10 s.
    ctx = timed_plan(body.model_copy(update={"dtype": "float32"}), [CPU], [CPU_RATES])
    assert 7 * 2 * 4096**3 / 1e11 <= ctx.budget.seconds < ROOMY.request_timeout_s


@pytest.mark.parametrize(("repeats", "warmup"), [(1, 0), (20, 20), (100, 20)])
def test_repeats_and_warmups_on_every_device_count(repeats: int, warmup: int) -> None:
    body = request(m=1024, k=1024, n=1024, repeats=repeats, warmup=warmup)
    runs = 1 + warmup + repeats
    one = timed_plan(body, [CPU], [CPU_RATES]).budget
    assert one.seconds >= runs * 2 * 1024**3 / 1e11
    assert one.objects == runs
    two = timed_plan(body, [CPU, CPU], [CPU_RATES, CPU_RATES]).budget
    assert two.seconds >= 2 * runs * 2 * 1024**3 / 1e11
    assert two.objects == 2 * runs


def test_each_device_is_timed_at_its_own_rate() -> None:
    gpu = torch.device("cuda:0")  # only planned here: nothing runs on it
    body = request(m=512, k=512, n=512, dtype="float16", repeats=5)
    both = timed_plan(body, [gpu, CPU], [GPU_RATES, CPU_RATES]).budget
    cpu_alone = timed_plan(body, [CPU], [CPU_RATES]).budget
    gpu_alone = timed_plan(body, [gpu], [GPU_RATES]).budget
    assert both.seconds == pytest.approx(cpu_alone.seconds + gpu_alone.seconds, rel=0.01)
    assert gpu_alone.seconds < 0.01 < 1 < cpu_alone.seconds
    assert both.throughput is GPU_RATES  # the budget's own rates are back


def test_a_thin_half_benchmark_is_charged_its_reads_and_scratch() -> None:
    """bfloat16 [2, 2²²] @ [2²², 2], 100 runs: 0.15 GFLOP/s on a CPU, ten times what its
    FLOPs at the square rate predicted (a 504 for a plan of 3 s), and a gigabyte of scratch
    per 2²³ of reduction: charged its reads at 8 passes (refused here) and the scratch as a
    tensor."""
    k = 1 << 22
    body = BenchmarkRequest.model_validate(
        {"m": 2, "k": k, "n": 2, "dtype": "bfloat16", "repeats": 100, "warmup": 0}
    )
    rates = Throughput("cpu", {"float32": 1e11, "bfloat16": 2e9}, 2e8)
    with pytest.raises(LimitExceeded) as refusal:
        timed_plan(body, [CPU], [rates])
    assert refusal.value.details["requested"] >= 101 * 8 * (4 * k) / 2e8
    few = body.model_copy(update={"repeats": 2, "k": k // 4})
    half = timed_plan(few, [CPU], [rates]).budget
    assert half.elements >= 32 * k // 4  # the scratch
    as_float32 = timed_plan(few.model_copy(update={"dtype": "float32"}), [CPU], [rates]).budget
    assert as_float32.seconds < half.seconds
