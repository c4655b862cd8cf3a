"""What a convolution and a pooling really cost, charged to a :class:`Budget` before they run.

A convolution is charged its multiply-adds, ``2 · (C/groups) · kh · kw`` FLOPs per output
element in the input's dtype, at a fraction of the device's matrix-multiply rate: a direct
convolution with few channels per group (a blur is one per group) keeps the arithmetic
units far less busy than a matrix multiply does. Where the algorithm copies, it is charged
the copies: on the CPU a float64 convolution (no oneDNN kernel) unfolds its input into a
``[(C/groups)·kh·kw, H'·W']`` matrix per group (``im2col``) before a matrix multiply, and a
``"same"`` padding that cannot be split evenly pads a copy of the input first.

A pooling is charged the reads of its windows (``kh · kw`` per output element, the adaptive
kinds their variable windows) as memory-bound work: comparisons and sums run at memory
speed, not at the matrix-multiply rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from service.limits import Budget

CONV_EFFICIENCY = 1 / 16
"""Fraction of the matrix-multiply rate a direct convolution reaches (oneDNN on a CPU with
a few channels per group: a tenth to a half; a matrix multiply of the same FLOPs: all)."""
DEPTHWISE_EFFICIENCY = 1 / 32
"""…and one with a single input and output channel per group (a depthwise blur)."""
THIN_DEPTHWISE_EFFICIENCY = 1 / 128
"""…and a depthwise one by a kernel of one row or one column (a separable blur's half): on 2
cores, kernels of 31 to 511 by 1 ran at 1.4 to 3 GFLOP/s beside a 250 GFLOP/s matmul (3×4000×512
by 2001×1 took 21.6 s, predicted at 1.45 s)…"""
LONG_THIN_KERNEL = 255
"""…and half that by a longer one: on an idle machine 3×4000×1024 ran at 3.6 GFLOP/s by
255×1, 1.8 by 2001×1 (13.4 s); beside other work, 3×4000×1024 by 2001×1 ran to the 504."""
ONEDNN_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})
"""dtypes the CPU convolves directly (oneDNN); others unfold their input first (im2col)."""
IM2COL_UNITS = 2
"""Elementwise passes per element of an unfolded input: written, then read by the product."""
POOL_READ_UNITS = 16
"""Elementwise passes per element a pooling window reads: torch's CPU pooling reads its
windows at 0.4 to 1.5 G elements a second on 2 cores, where a copy runs at 6 G (max over
32×32 windows at stride 1 took 16 times its reads at the copy rate, a dilated one 13
times, avg over 128×128 windows 6 times; charged at one pass a read, a 256×256 max pool
of a 1024² picture was predicted at 6 s and ran to the 504)."""
POOL_OUTPUT_UNITS = 4
"""Elementwise passes per pooled element beyond its window's reads: the window's bounds,
the result, for max pooling its index."""
LP_UNITS = 3
"""Extra elementwise passes of an Lp pooling over its input: ``x ** p`` into a copy, and
its sign; over its output: the power ``1/p`` and the scale."""


ONEDNN_MIN_INPUT = 20480
"""On a CPU, torch leaves a float32 convolution to oneDNN unless it is small by its own rule
(ATen's ``use_mkldnn``): a batch of one, one group, a kernel of at most 3 on a side and an
input (before padding) of at most this many elements go to its own unfolding instead. A
1×1 input padded to 501×2001, by a 1×1001 kernel, unfolded 2 GB."""


ONEDNN_BLOCK = 16
"""Channels oneDNN's blocked layout groups together on a CPU (16 with AVX-512, 8 with
AVX2): a convolution it runs copies its input and output into that layout, the channels
padded to a whole block. On 2048² pictures, one channel to one took 311 MB beside 32 MB of
input and output, three to eight 423 MB, a depthwise blur of three 524 MB."""


def _blocks(channels: int) -> int:
    return -(-channels // ONEDNN_BLOCK) * ONEDNN_BLOCK


def direct_convolution(
    dtype: torch.dtype,
    device: torch.device,
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    groups: int,
) -> bool:
    """Whether ``device`` convolves ``dtype`` without unfolding the input (everything but a
    CPU's float64 and the like, and its small float32 cases, :data:`ONEDNN_MIN_INPUT`)."""
    if device.type != "cpu":
        return True
    if dtype not in ONEDNN_DTYPES:
        return False
    kh, kw = int(weight_shape[-2]), int(weight_shape[-1])
    return (
        groups > 1
        or (kh > 3 and kw > 3)
        or int(input_shape[0]) > 1
        or math.prod(int(s) for s in input_shape) > ONEDNN_MIN_INPUT
    )


def charge_conv2d(
    budget: Budget,
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    output_shape: Sequence[int],
    *,
    groups: int,
    dtype: torch.dtype,
    device: torch.device,
    padded_copy: int = 0,
    what: str = "the convolution",
) -> None:
    """Charge ``conv2d`` of an input ``[N, C, H, W]`` by a weight ``[K, C/groups, kh, kw]``
    into ``output_shape`` ``[N, K, H', W']``: the multiply-adds in ``dtype`` at the rate a
    direct convolution reaches, the passes over the input and output, the unfolded input
    where the device unfolds it (a tensor of its own, held to the element limit), and a
    padded copy of ``padded_copy`` elements made first."""
    n, channels = int(input_shape[0]), int(input_shape[1])
    out_channels, per_group, kh, kw = (int(s) for s in weight_shape)
    positions = math.prod(int(s) for s in output_shape[2:])
    outputs = n * out_channels * positions
    flops = 2.0 * outputs * per_group * kh * kw
    budget.charge_flops(flops, what, dtype=dtype)
    throughput = budget.throughput
    if throughput is not None:
        depthwise = per_group == 1 and out_channels == groups
        efficiency = DEPTHWISE_EFFICIENCY if depthwise else CONV_EFFICIENCY
        if depthwise and min(kh, kw) == 1 < max(kh, kw):
            long = max(kh, kw) > LONG_THIN_KERNEL
            efficiency = THIN_DEPTHWISE_EFFICIENCY / (2 if long else 1)
        # charge_flops predicted the full rate; the rest of the time at the real one.
        budget.charge_seconds(flops / throughput.rate(dtype) * (1 / efficiency - 1), what)
    budget.charge_elementwise(float(math.prod(input_shape)) + outputs + padded_copy, what)
    if padded_copy:
        budget.charge_tensor(padded_copy, f"{what}: the padded input")
    direct = direct_convolution(dtype, device, input_shape, weight_shape, groups)
    if direct and device.type == "cpu":
        blocked = n * (_blocks(channels) * math.prod(int(s) for s in input_shape[2:]))
        blocked += n * _blocks(out_channels) * positions
        # Made and filled in a pass each (charge_tensors predicts the pass).
        budget.charge_tensors(blocked, f"{what}: oneDNN's copies in its blocked layout")
    if not direct:
        # One group's unfolded input at a time: the whole batch's without dilation (with
        # it, one sample's; charged as the larger).
        unfolded = per_group * kh * kw * positions * n
        budget.charge_tensor(unfolded, f"{what}: its input unfolded (im2col, {dtype})")
        budget.charge_elementwise(float(channels) * kh * kw * positions * n * IM2COL_UNITS, what)


def pool_window_reads(
    kind: str,
    window: tuple[int, int],
    input_shape: Sequence[int],
    output_shape: Sequence[int],
) -> float:
    """Elements a pooling reads: ``kh · kw`` per output element, or for the adaptive kinds
    each output's own window, at most ``ceil(H/H') + 1`` rows by ``ceil(W/W') + 1``
    columns."""
    outputs = float(math.prod(output_shape))
    if kind.startswith("adaptive"):
        h, w = int(input_shape[-2]), int(input_shape[-1])
        oh, ow = max(int(output_shape[-2]), 1), max(int(output_shape[-1]), 1)
        return outputs * (math.ceil(h / oh) + 1) * (math.ceil(w / ow) + 1)
    return outputs * window[0] * window[1]


def charge_pool2d(
    budget: Budget,
    kind: str,
    window: tuple[int, int],
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    *,
    dtype: torch.dtype,
    what: str,
) -> None:
    """Charge a pooling: a FLOP per window element read (in ``dtype``), the reads and the
    outputs as memory-bound work, and for Lp pooling its input-sized copy."""
    reads = pool_window_reads(kind, window, input_shape, output_shape)
    outputs = float(math.prod(output_shape))
    inputs = math.prod(input_shape)
    factor = 3 if kind == "lp" else 1
    budget.charge_flops(reads * factor, what, dtype=dtype)
    units = reads * POOL_READ_UNITS + outputs * POOL_OUTPUT_UNITS
    if kind == "lp":
        budget.charge_tensor(inputs, f"{what}: x ** p")
        units += LP_UNITS * (inputs + outputs)
    budget.charge_elementwise(units, what)
