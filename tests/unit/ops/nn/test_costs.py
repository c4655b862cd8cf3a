"""What the nn ops charge before they run: activations and their derivatives (the softmax
family's Jacobian batches), the figure's panels, and the layers' real work (recurrent steps
one after another, FLOPs at the input's dtype)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from service.calibration import Throughput
from service.errors import ErrorCode, LimitExceeded
from service.limits import Budget
from service.ops.nn.activations import bind, charge
from service.ops.nn.linear import LinearSpec, plan_linear
from service.ops.nn.rnn import STEP_SECONDS, RNNSpec, plan_rnn
from service.ops.render.activations import charge_activation_plot
from service.ops.render.plots import PANEL_SECONDS, figure_size_px

# A calibrated CPU: float16 matmuls 100 times slower than float32, float64 10 times.
RATES = Throughput("cpu", {"float32": 1e11, "float64": 1e10, "float16": 1e9}, 1e9)


def budget(max_seconds: float = 30.0, **limits: Any) -> Budget:
    return Budget(
        limits.pop("max_elements", 1 << 25),
        limits.pop("max_total_elements", 1 << 27),
        limits.pop("max_flops", 2e12),
        throughput=RATES,
        max_seconds=max_seconds,
        max_objects=limits.pop("max_objects", 1_000_000),
    )


def refused_fast(charge_it: Callable[[], object]) -> LimitExceeded:
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as refusal:
        charge_it()
    assert time.perf_counter() - start < 0.5
    return refusal.value


# --- activations -----------------------------------------------------------------------------


def test_activations_are_timed_by_dtype_and_derivative() -> None:
    functions = bind([("gelu", {})], {})
    seconds = {}
    for dtype in (torch.float16, torch.float32):
        for derivative in (False, True):
            charged = budget()
            charge(functions, torch.zeros(10_000, dtype=dtype), charged, derivative=derivative)
            seconds[dtype, derivative] = charged.seconds
    assert seconds[torch.float32, True] > 2 * seconds[torch.float32, False]
    assert seconds[torch.float16, False] > 2 * seconds[torch.float32, False]


def test_the_softmax_jacobian_is_one_backward_pass_per_position_along_dim() -> None:
    """[4096, 4096] along dim 1: 4096 backward passes over 16.7M elements, in 4096 batches."""
    (softmax,) = bind([("softmax", {"dim": 1})], {})
    x = torch.empty(4096, 4096, device="meta")
    refusal = refused_fast(lambda: charge([softmax], x, budget(), derivative=True))
    assert refusal.limit in ("request_timeout_s", "max_flops")
    charged = budget(max_seconds=1e9, max_flops=1e30)
    charge([softmax], x, charged, derivative=True)
    assert charged.objects >= 4096  # one batch per position: each is a backward pass
    assert charged.seconds > 30.0
    # Along a short dim the same number of elements is cheap.
    short = budget()
    charge([softmax], torch.empty(2**20, 16, device="meta"), short, derivative=True)
    assert short.seconds < 30.0


def test_a_figure_charges_every_panel() -> None:
    charged = budget()
    charge_activation_plot(
        charged, 32, 100, derivative=True, columns=8, max_points=1 << 20, max_pixels=1 << 25
    )
    assert charged.objects == 32
    assert charged.seconds >= 32 * PANEL_SECONDS
    width, height = figure_size_px(32, 1)
    refusal = refused_fast(
        lambda: charge_activation_plot(
            budget(),
            32,
            100,
            derivative=False,
            columns=1,
            max_points=1 << 20,
            max_pixels=width * height - 1,
        )
    )
    assert refusal.limit == "max_png_pixels"
    assert refusal.code is ErrorCode.PNG_PIXELS_LIMIT
    refusal = refused_fast(
        lambda: charge_activation_plot(
            budget(max_seconds=5.0),
            32,
            100,
            derivative=False,
            columns=8,
            max_points=1 << 20,
            max_pixels=1 << 25,
        )
    )
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET


# --- layers ----------------------------------------------------------------------------------


def test_linear_flops_are_timed_at_the_inputs_dtype() -> None:
    spec = LinearSpec(4096, 4096)
    seconds = {}
    for dtype in (torch.float32, torch.float64):
        charged = budget()
        plan_linear(spec, (4096, 4096), charged, dtype=dtype)
        seconds[dtype] = charged.seconds
    flops = 2 * 4096**3
    assert seconds[torch.float32] >= flops / 1e11
    assert seconds[torch.float64] >= flops / 1e10
    assert seconds[torch.float64] > 5 * seconds[torch.float32]
    # 8192 rows: 27 s in float64, 2.7 s in float32.
    refusal = refused_fast(
        lambda: plan_linear(spec, (8192, 4096), budget(max_seconds=10.0), dtype=torch.float64)
    )
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    plan_linear(spec, (8192, 4096), budget(max_seconds=10.0), dtype=torch.float32)


@pytest.mark.parametrize(
    ("mode", "gates"),
    [("rnn", 1), ("gru", 3), ("lstm", 4)],
)
def test_recurrent_steps_are_charged_one_after_another(mode: str, gates: int) -> None:
    """A long sequence of tiny steps has next to no FLOPs but takes seq_len × layers ×
    directions kernel-call rounds: 100k steps × 16 layers × 2 directions = 3.2M."""
    spec = RNNSpec(mode, 1, 1, num_layers=16, bidirectional=True)  # type: ignore[arg-type]
    refusal = refused_fast(lambda: plan_rnn(spec, (100_000, 1, 1), budget()))
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    assert refusal.details["requested"] >= 3_200_000 * STEP_SECONDS
    # A shorter sequence fits; its FLOPs are every gate matmul, timed at float32's rate.
    charged = budget()
    plan_rnn(spec, (1_000, 1, 1), charged)
    steps = 1_000 * 16 * 2
    # Per step and direction: x @ W_ih (1 input feature in layer 0, 2 after) and h @ W_hh.
    per_direction = 2 * gates * (1 + 1) + 15 * 2 * gates * (2 + 1)
    assert charged.flops == 1_000 * 2 * per_direction
    assert charged.seconds >= steps * STEP_SECONDS
    assert charged.seconds < 30.0


def test_recurrent_flops_are_timed_at_the_inputs_dtype() -> None:
    spec = RNNSpec("lstm", 512, 512)
    seconds = {}
    for dtype in (torch.float32, torch.float64):
        charged = budget(max_seconds=1e9)
        # A batch of 512: bound by its FLOPs (a small batch by reading the weights).
        plan_rnn(spec, (16, 512, 512), charged, dtype=dtype)
        seconds[dtype] = charged.seconds
    assert seconds[torch.float64] > 5 * seconds[torch.float32]


def test_every_step_of_a_small_batch_reads_the_recurrent_weight() -> None:
    """With a batch of 1 each step is a matrix by a vector, bound by reading the whole
    recurrent weight: an RNN of hidden size 5792 (134 MB of weight_hh) took 20 ms a step,
    16 s for 1000 steps, where 4 s had been charged by its FLOPs."""
    spec = RNNSpec("rnn", 1, 5792)
    refusal = refused_fast(lambda: plan_rnn(spec, (1_000, 1, 1), budget()))
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    charged = budget(max_seconds=1e9)
    plan_rnn(spec, (1_000, 1, 1), charged)
    assert charged.seconds >= 1_000 * 5792 * 5792 / RATES.elements_per_s  # one pass a step
    small = budget()
    plan_rnn(RNNSpec("lstm", 8, 16), (400, 1, 8), small)  # the tutorial's size: milliseconds
    assert small.seconds < 0.05
