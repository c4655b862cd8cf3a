"""What a convolution and a pooling are charged: their real algorithm on the device, in
their dtype, before anything runs (predicted times at fixed rates)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

from service.calibration import Throughput
from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget
from service.ops.nn.activations import bind
from service.ops.vision.conv import ConvSpec, plan_conv
from service.ops.vision.cost import (
    CONV_EFFICIENCY,
    DEPTHWISE_EFFICIENCY,
    ONEDNN_BLOCK,
    POOL_OUTPUT_UNITS,
    THIN_DEPTHWISE_EFFICIENCY,
    charge_conv2d,
    pool_window_reads,
)
from service.ops.vision.pool import PoolSpec, plan_pool

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
THROUGHPUT = Throughput("cpu", {"float32": 1e11, "float16": 1e9, "float64": 5e10}, 1e9)


def timed(**limits: float) -> Budget:
    """Budget of large sizes that predicts time at :data:`THROUGHPUT`'s rates."""
    values = {"max_elements": 1 << 30, "max_total_elements": 1 << 32, "max_flops": 1e15}
    values.update(limits)
    return Budget(
        int(values["max_elements"]),
        int(values["max_total_elements"]),
        values["max_flops"],
        throughput=THROUGHPUT,
        max_seconds=values.get("max_seconds", math.inf),
    )


def test_a_convolution_is_charged_its_multiply_adds_at_a_direct_convolutions_rate() -> None:
    spent = timed()
    plan_conv([1, 1, 512, 768], torch.float32, [2, 1, 5, 5], ConvSpec(kernel_size=5), spent)
    flops = 2.0 * 2 * 508 * 764 * 25
    assert spent.flops == flops
    # In, out, out again; and both copied in oneDNN's layout, channels padded to a block.
    blocked = ONEDNN_BLOCK * 512 * 768 + ONEDNN_BLOCK * 508 * 764
    passes = (512 * 768 + 2 * 2 * 508 * 764 + blocked) / THROUGHPUT.elements_per_s
    assert spent.seconds == pytest.approx(flops / 1e11 / CONV_EFFICIENCY + passes, rel=1e-6)
    assert spent.elements == 2 * 508 * 764 + blocked


def test_a_convolution_is_charged_in_its_dtype() -> None:
    def seconds(dtype: torch.dtype) -> float:
        spent = timed()
        plan_conv([1, 3, 256, 256], dtype, [16, 3, 9, 9], ConvSpec(kernel_size=9), spent)
        return spent.seconds

    assert seconds(torch.float16) > 50 * seconds(torch.float32)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        plan_conv(
            [1, 3, 1024, 1024],
            torch.float16,
            [64, 3, 9, 9],
            ConvSpec(kernel_size=9),
            timed(max_seconds=30.0),
        )
    assert info.value.code == "over_time_budget"
    assert time.perf_counter() - start < 0.5
    plan_conv(
        [1, 3, 1024, 1024],
        torch.float32,
        [64, 3, 9, 9],
        ConvSpec(kernel_size=9),
        timed(max_seconds=30.0),
    )


def test_a_float64_convolution_on_the_cpu_unfolds_its_input() -> None:
    """No oneDNN kernel for float64: torch unfolds a [(C/g)·kh·kw, H'·W'] matrix first (for
    31×31 on 512² that is 2e8 values, 1.6 GB), charged as a tensor."""
    spec = ConvSpec(kernel_size=31)
    unfolded = 31 * 31 * 482 * 482
    with pytest.raises(LimitExceeded) as info:
        plan_conv(
            [1, 1, 512, 512], torch.float64, [1, 1, 31, 31], spec, timed(max_elements=1 << 25)
        )
    assert info.value.code == "elements_limit"
    assert info.value.details["requested"] == unfolded
    # float32 is convolved directly, and so is float64 on a GPU.
    plan_conv([1, 1, 512, 512], torch.float32, [1, 1, 31, 31], spec, timed(max_elements=1 << 25))
    plan_conv(
        [1, 1, 512, 512],
        torch.float64,
        [1, 1, 31, 31],
        spec,
        timed(max_elements=1 << 25),
        device=CUDA,
    )


@pytest.mark.parametrize(
    ("input_shape", "weight_shape", "padding", "groups"),
    [
        ([1, 1, 1, 1], [1, 1, 1, 101], (10, 100), 1),  # 1 element padded: unfolded
        ([1, 1, 100, 100], [2, 1, 3, 3], 0, 1),  # 10,000 elements: unfolded
        ([1, 1, 200, 200], [2, 1, 3, 3], 0, 1),  # 40,000: oneDNN
        ([2, 1, 50, 50], [2, 1, 3, 3], 0, 1),  # a batch of 2: oneDNN
        ([1, 2, 50, 50], [2, 1, 3, 3], 0, 2),  # groups: oneDNN
        ([1, 1, 50, 50], [1, 1, 5, 5], 0, 1),  # a kernel over 3 both ways: oneDNN
    ],
)
def test_a_float32_convolution_is_charged_the_unfolding_torch_does(
    input_shape: list[int], weight_shape: list[int], padding: Any, groups: int
) -> None:
    """torch's CPU convolution of a small float32 input unfolds it, as float64 does (a 1×1
    input padded to 501×2001 by a 1×1001 kernel: 2 GB), checked against what torch's
    allocator hands out beside the output."""
    x, weight = torch.ones(input_shape), torch.ones(weight_shape)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiled:
        out = torch.nn.functional.conv2d(x, weight, padding=padding, groups=groups)
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in profiled.events())
    beside = allocated - out.numel() * out.element_size()
    spent = timed()
    spec = ConvSpec(kernel_size=None, padding=padding, groups=groups)
    plan_conv(input_shape, torch.float32, weight_shape, spec, spent)
    n, channels, h, w = input_shape
    if beside <= 64:  # oneDNN's: its copies in its blocked layout, which torch does not see
        blocks = -(-channels // ONEDNN_BLOCK) * h * w + -(-out.shape[1] // ONEDNN_BLOCK) * (
            out.shape[2] * out.shape[3]
        )
        assert spent.elements - out.numel() == n * ONEDNN_BLOCK * blocks
    else:
        assert (spent.elements - out.numel()) * 4 >= beside


def test_a_depthwise_convolution_is_charged_its_lower_rate() -> None:
    # Inputs over ONEDNN_MIN_INPUT: convolved directly, not unfolded.
    dense, depthwise = timed(), timed()
    charge_conv2d(
        dense,
        [1, 4, 96, 96],
        [4, 4, 3, 3],
        [1, 4, 94, 94],
        groups=1,
        dtype=torch.float32,
        device=CPU,
    )
    charge_conv2d(
        depthwise,
        [1, 16, 96, 96],
        [16, 1, 3, 3],
        [1, 16, 94, 94],
        groups=16,
        dtype=torch.float32,
        device=CPU,
    )
    assert dense.flops == depthwise.flops == 2 * 16 * 94 * 94 * 9
    passes = {"dense": 4 * 96 * 96 + 4 * 94 * 94, "depthwise": 16 * 96 * 96 + 16 * 94 * 94}
    for kind in passes:  # and oneDNN's copies of both, 16 channels to a block
        passes[kind] += ONEDNN_BLOCK * (96 * 96 + 94 * 94)
    assert dense.seconds == pytest.approx(
        dense.flops / 1e11 / CONV_EFFICIENCY + passes["dense"] / 1e9, rel=1e-6
    )
    assert depthwise.seconds == pytest.approx(
        depthwise.flops / 1e11 / DEPTHWISE_EFFICIENCY + passes["depthwise"] / 1e9, rel=1e-6
    )


def test_an_uneven_same_padding_charges_the_padded_copy() -> None:
    even, odd = timed(), timed()
    plan_conv([1, 2, 120, 150], torch.float32, [1, 2, 4, 4], ConvSpec(padding="same"), even)
    plan_conv([1, 2, 120, 150], torch.float32, [1, 2, 3, 3], ConvSpec(padding="same"), odd)
    assert even.elements - odd.elements == 2 * 121 * 151


def test_the_activation_after_a_convolution_is_charged() -> None:
    plain, activated = timed(), timed()
    spec = ConvSpec(kernel_size=3)
    plan_conv([1, 1, 64, 64], torch.float32, [1, 1, 3, 3], spec, plain)
    relu = bind([("relu", {})], {})[0]
    plan_conv([1, 1, 64, 64], torch.float32, [1, 1, 3, 3], spec, activated, activation=relu)
    assert activated.elements == plain.elements + 62 * 62
    assert activated.seconds > plain.seconds


def test_a_convolution_without_outputs_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        plan_conv([1 << 20, 1, 1, 1], torch.float32, [0, 1, 1, 1], ConvSpec(), timed())
    assert info.value.code == "shape_mismatch"


@pytest.mark.parametrize(
    ("spec", "window"),
    [(PoolSpec("max", 15, 1), (15, 15)), (PoolSpec("avg", (3, 5), 1), (3, 5))],
)
def test_a_pooling_reads_its_windows(spec: PoolSpec, window: tuple[int, int]) -> None:
    spent = timed()
    out = plan_pool(spec, [1, 2, 100, 100], torch.float32, spent)
    outputs = math.prod(out)
    assert spent.flops == outputs * window[0] * window[1]
    reads = outputs * (window[0] * window[1] + POOL_OUTPUT_UNITS)
    assert spent.seconds >= reads / THROUGHPUT.elements_per_s


def test_a_pooling_with_a_huge_window_is_refused_at_once() -> None:
    """A 2049×2049 max pool with stride 1 over a 4096² map reads 2049² inputs per output:
    1.8e13 reads, hours, however few outputs it has."""
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        plan_pool(
            PoolSpec("max", 2049, 1), [1, 1, 4096, 4096], torch.float32, timed(max_seconds=30.0)
        )
    assert info.value.code == "over_time_budget"
    assert time.perf_counter() - start < 0.5


def test_adaptive_windows_and_lp_copies() -> None:
    assert pool_window_reads("adaptive_avg", (2, 2), [1, 1, 100, 100], [1, 1, 7, 7]) == 49 * 16 * 16
    assert pool_window_reads("adaptive_max", (2, 2), [1, 1, 10, 10], [1, 1, 40, 40]) == 1600 * 4
    lp, avg = timed(), timed()
    plan_pool(PoolSpec("lp", 3, 1), [1, 1, 50, 50], torch.float32, lp)
    plan_pool(PoolSpec("avg", 3, 1), [1, 1, 50, 50], torch.float32, avg)
    assert lp.elements == avg.elements + 50 * 50  # x ** p, a copy of the input


ONEDNN_PEAK = """
import torch

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(key + ":"))

x, w = torch.rand(1, 1, 2048, 2048), torch.rand(1, 1, 3, 3)
torch.nn.functional.conv2d(x[..., :256, :256], w)  # oneDNN loaded and warm
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak resident memory (VmHWM) back to the current
before = status("VmRSS")
y = torch.nn.functional.conv2d(x, w)
print(status("VmHWM") - before - 4 * y.numel())
"""


def test_onednns_copies_are_charged_the_memory_they_take() -> None:
    """A one-channel float32 convolution of a 2048² picture took 311 MB beside its 16 MB
    output: oneDNN's copies of input and output, 16 channels to a block (measured here in a
    process of its own, by its peak resident memory)."""
    run = subprocess.run(
        [sys.executable, "-c", ONEDNN_PEAK], capture_output=True, text=True, check=True
    )
    beside = int(run.stdout.split()[-1])
    spent = timed()
    plan_conv([1, 1, 2048, 2048], torch.float32, [1, 1, 3, 3], ConvSpec(), spent)
    charged = spent.elements - 2046 * 2046  # beside the output
    assert charged * 4 >= beside  # elements of float32
    assert beside > 4 * 2048 * 2048 * 4  # far more than the input: the copies are real


def test_a_depthwise_convolution_by_a_thin_kernel_is_charged_its_lower_rate() -> None:
    """A kernel of one column (or row) runs at a quarter of a square one's rate: 3×4000×512
    by 2001×1 took 21.6 s where 1.45 s had been predicted."""

    def seconds(kernel: tuple[int, int]) -> tuple[float, float]:
        """Predicted, and the FLOPs' time at the full matmul rate."""
        spent = timed()
        kh, kw = kernel
        charge_conv2d(
            spent,
            [1, 3, 4000, 512],
            [3, 1, kh, kw],
            [1, 3, 4001 - kh, 513 - kw],
            groups=3,
            dtype=torch.float32,
            device=CPU,
        )
        flops = 2.0 * 3 * (4001 - kh) * (513 - kw) * kh * kw
        return (spent.seconds, flops / THROUGHPUT.rate(torch.float32))

    for kernel, slower in (((2001, 1), 2), ((1, 255), 1)):
        spent, at_full_rate = seconds(kernel)
        assert spent >= slower * at_full_rate / THIN_DEPTHWISE_EFFICIENCY
    square, at_full_rate = seconds((45, 45))
    assert square < 1.01 * at_full_rate / DEPTHWISE_EFFICIENCY + 1.0
