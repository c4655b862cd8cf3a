"""Convolution and pooling ops against torch: presets, the seeded weight, shapes, pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from service.errors import InvalidInput, LimitExceeded, OpError
from service.limits import Budget
from service.ops.nn.activations import bind
from service.ops.vision.conv import (
    PRESETS,
    ConvSpec,
    PoolSpec,
    as_batch,
    build_weight,
    conv_forward,
    gaussian_sigma,
    plan_conv,
    plan_pool,
    pool2d,
    preset_kernel,
)

CPU = torch.device("cpu")


def big_budget() -> Budget:
    return Budget(1 << 30, 1 << 32, 1e15)


def tutorial_kernel(size: int) -> torch.Tensor:
    """The tutorial's ``ker``: ones × −1 with k² − 1 in the centre."""
    ker = torch.ones(size, size, dtype=torch.float64) * -1
    ker[size // 2, size // 2] = size * size - 1
    return ker


def binomial(n: int) -> np.ndarray:
    row = np.array([1.0])
    for _ in range(n):
        row = np.convolve(row, [1.0, 1.0])
    return row


def sobel_x(size: int) -> np.ndarray:
    derivative = np.convolve(binomial(size - 3), [-1.0, 0.0, 1.0])
    return np.outer(binomial(size - 1), derivative)


def laplacian(size: int) -> np.ndarray:
    if size == 3:
        return np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    second = np.convolve(binomial(size - 3), [1.0, -2.0, 1.0])
    smooth = binomial(size - 1)
    return np.outer(smooth, second) + np.outer(second, smooth)


def reference(name: str, size: int) -> np.ndarray:
    c = size // 2
    if name == "edge":
        return tutorial_kernel(size).numpy()
    if name == "sobel_x":
        return sobel_x(size)
    if name == "sobel_y":
        return sobel_x(size).T
    if name == "laplacian":
        return laplacian(size)
    if name == "gaussian":
        line = np.exp(-((np.arange(size) - c) ** 2) / (2 * gaussian_sigma(size) ** 2))
        kernel = np.outer(line, line)
        return kernel / kernel.sum()
    if name == "box":
        return np.full((size, size), 1.0 / size**2)
    if name == "sharpen":
        identity = np.zeros((size, size))
        identity[c, c] = 1.0
        return identity - laplacian(size)
    ramp = np.arange(size) - c
    emboss = np.add.outer(ramp, ramp).astype(float)
    emboss[c, c] = 1.0
    return emboss


FIXED = [name for name in PRESETS if name != "random"]


@pytest.mark.parametrize("size", [3, 5, 7])
@pytest.mark.parametrize("name", FIXED)
def test_presets_match_their_definitions(name: str, size: int) -> None:
    np.testing.assert_allclose(preset_kernel(name, size).numpy(), reference(name, size))


def test_the_classic_3x3_kernels() -> None:
    np.testing.assert_array_equal(
        preset_kernel("sobel_x", 3).numpy(), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    )
    np.testing.assert_array_equal(
        preset_kernel("sharpen", 3).numpy(), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    )
    np.testing.assert_array_equal(
        preset_kernel("emboss", 3).numpy(), [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
    )
    assert preset_kernel("edge", 5)[2, 2] == 24
    # Derivative and Laplacian kernels ignore a constant picture; blurs keep it.
    for name in ("edge", "sobel_x", "sobel_y", "laplacian"):
        assert abs(float(preset_kernel(name, 7).sum())) < 1e-12
    for name in ("gaussian", "box", "sharpen", "emboss"):
        assert float(preset_kernel(name, 7).sum()) == pytest.approx(1.0)


def test_gaussian_sigma_is_used() -> None:
    wide = preset_kernel("gaussian", 9, sigma=3.0)
    line = np.exp(-((np.arange(9) - 4) ** 2) / 18.0)
    np.testing.assert_allclose(wide.numpy(), np.outer(line, line) / np.outer(line, line).sum())


@pytest.mark.parametrize("size", [1, 2, 4])
def test_presets_need_an_odd_size_of_three_or_more(size: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        preset_kernel("edge", size)
    assert caught.value.code == "invalid_kernel_size"


def test_the_tutorials_two_kernels_are_nn_conv2ds() -> None:
    weight = build_weight(["edge", "random"], ConvSpec(), 1, torch.float32, seed=7)
    torch.manual_seed(7)
    conv = nn.Conv2d(1, 2, (5, 5), bias=False)
    conv.weight.data[0] = tutorial_kernel(5).float().reshape(1, 1, 5, 5)
    torch.testing.assert_close(weight.weight, conv.weight.data, rtol=0, atol=0)
    assert weight.labels == ["edge", "random"]
    assert weight.bias is None


@pytest.mark.parametrize(
    ("channels", "groups", "bias"), [(3, 1, True), (4, 2, True), (2, 2, False)]
)
def test_random_kernels_and_bias_are_nn_conv2ds(channels: int, groups: int, bias: bool) -> None:
    kernels = ["random"] * 4
    spec = ConvSpec(kernel_size=3, groups=groups, bias=bias)
    weight = build_weight(kernels, spec, channels, torch.float64, seed=3)
    torch.manual_seed(3)
    conv = nn.Conv2d(channels, 4, 3, groups=groups, bias=bias, dtype=torch.float64)
    torch.testing.assert_close(weight.weight, conv.weight.data, rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(weight.bias, conv.bias.data, rtol=0, atol=0)


def test_presets_apply_to_every_channel_of_a_group() -> None:
    weight = build_weight(
        ["sobel_x", "box"], ConvSpec(kernel_size=3, groups=1), 3, torch.float32, seed=0
    )
    assert weight.weight.shape == (2, 3, 3, 3)
    for channel in range(3):
        torch.testing.assert_close(weight.weight[0, channel], preset_kernel("sobel_x", 3).float())
    x = torch.rand(1, 3, 10, 10, dtype=torch.float32)
    out = conv_forward(x, weight, ConvSpec(kernel_size=3), device=CPU).output
    summed = F.conv2d(x.sum(dim=1, keepdim=True), preset_kernel("sobel_x", 3).float()[None, None])
    torch.testing.assert_close(out[:, :1], summed, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_convolves_like_torch(name: str) -> None:
    x = torch.rand(2, 1, 12, 15, generator=torch.Generator().manual_seed(1)) * 255
    spec = ConvSpec(kernel_size=5)
    weight = build_weight([name], spec, 1, torch.float32, seed=11)
    out = conv_forward(x, weight, spec, device=CPU).output
    kernel = weight.weight if name == "random" else preset_kernel(name, 5).float()[None, None]
    torch.testing.assert_close(out, F.conv2d(x, kernel))


def test_explicit_kernels_of_two_three_and_four_dimensions() -> None:
    two = torch.arange(9, dtype=torch.float32).reshape(3, 3)
    three = torch.rand(2, 3, 3)
    four = torch.rand(3, 2, 3, 3)
    weight = build_weight([two, "laplacian", three, four], ConvSpec(), 2, torch.float32, seed=0)
    assert weight.weight.shape == (6, 2, 3, 3)
    torch.testing.assert_close(weight.weight[0], two.expand(2, 3, 3))
    torch.testing.assert_close(weight.weight[2], three)
    torch.testing.assert_close(weight.weight[3:], four)
    assert weight.labels == [
        "kernel[0]",
        "laplacian",
        "kernel[2]",
        "kernel[3][0]",
        "kernel[3][1]",
        "kernel[3][2]",
    ]


@pytest.mark.parametrize(
    ("kernels", "kernel_size", "channels", "groups", "code"),
    [
        ([torch.zeros(3, 3), torch.zeros(5, 5)], None, 1, 1, "kernel_size_mismatch"),
        ([torch.zeros(3, 3), "edge"], 5, 1, 1, "kernel_size_mismatch"),
        ([torch.zeros(3, 5), "edge"], None, 1, 1, "kernel_size_mismatch"),
        ([torch.zeros(2, 3, 3)], None, 3, 1, "shape_mismatch"),
        ([torch.zeros(3)], None, 1, 1, "shape_mismatch"),
        (["edge", "box", "emboss"], 3, 4, 2, "invalid_groups"),
        (["nope"], 3, 1, 1, "unknown_kernel"),
        (["edge"], 4, 1, 1, "invalid_kernel_size"),
    ],
)
def test_weight_errors(
    kernels: list[object], kernel_size: int | None, channels: int, groups: int, code: str
) -> None:
    spec = ConvSpec(kernel_size=kernel_size, groups=groups)
    with pytest.raises(InvalidInput) as caught:
        build_weight(kernels, spec, channels, torch.float32, seed=0)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_bias_values_must_match_the_outputs() -> None:
    spec = ConvSpec(kernel_size=3, bias=True)
    weight = build_weight(
        ["edge", "box"], spec, 1, torch.float32, seed=0, bias_values=torch.tensor([1.0, 2.0])
    )
    torch.testing.assert_close(weight.bias, torch.tensor([1.0, 2.0]))
    with pytest.raises(InvalidInput):
        build_weight(["edge"], spec, 1, torch.float32, seed=0, bias_values=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("kernel_size", [3, 4, 5])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_keeps_the_size(kernel_size: int, dilation: int) -> None:
    spec = ConvSpec(kernel_size=kernel_size, padding="same", dilation=dilation)
    weight = build_weight(["random"], spec, 1, torch.float32, seed=0)
    plan = plan_conv([1, 1, 17, 23], torch.float32, weight.weight.shape, spec, big_budget())
    assert plan.conv_shape == [1, 1, 17, 23]
    out = conv_forward(torch.rand(1, 1, 17, 23), weight, spec, device=CPU).output
    assert out.shape == (1, 1, 17, 23)


def test_stride_padding_dilation_groups_as_torch() -> None:
    x = torch.rand(2, 4, 20, 21)
    spec = ConvSpec(kernel_size=3, stride=(2, 3), padding=(1, 2), dilation=2, groups=2, bias=True)
    weight = build_weight(["random"] * 6, spec, 4, torch.float32, seed=5)
    out = conv_forward(x, weight, spec, device=CPU).output
    expected = F.conv2d(
        x, weight.weight, weight.bias, stride=(2, 3), padding=(1, 2), dilation=2, groups=2
    )
    torch.testing.assert_close(out, expected)
    plan = plan_conv(x.shape, x.dtype, weight.weight.shape, spec, big_budget())
    assert plan.conv_shape == list(expected.shape)


def test_activation_then_pool_in_that_order() -> None:
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    spec = ConvSpec(kernel_size=3)
    weight = build_weight(["laplacian"], spec, 1, torch.float32, seed=0)
    activation = bind([("leaky_relu", {"negative_slope": 0.2})], {})[0]
    pool = PoolSpec(kind="avg", kernel_size=2)
    result = conv_forward(x, weight, spec, activation=activation, pool=pool, device=CPU)
    expected = F.avg_pool2d(F.leaky_relu(F.conv2d(x, weight.weight), 0.2), 2)
    torch.testing.assert_close(result.output, expected)
    assert result.conv_shape == [1, 1, 10, 10]


def test_plans_charge_and_refuse() -> None:
    spec = ConvSpec(kernel_size=5)
    with pytest.raises(OpError) as caught:
        plan_conv([1, 1, 3, 3], torch.float32, [1, 1, 5, 5], spec, big_budget())
    assert "conv2d" in caught.value.message
    with pytest.raises(OpError):
        plan_conv(
            [1, 1, 9, 9],
            torch.float32,
            [1, 1, 5, 5],
            ConvSpec(padding="same", stride=2),
            big_budget(),
        )
    flops = 2.0 * 2 * 508 * 764 * 25
    with pytest.raises(LimitExceeded) as limit:
        plan_conv(
            [1, 1, 512, 768], torch.float32, [2, 1, 5, 5], spec, Budget(1 << 30, 1 << 32, flops - 1)
        )
    assert limit.value.code == "flops_limit"
    budget = big_budget()
    plan_conv([1, 1, 512, 768], torch.float32, [2, 1, 5, 5], spec, budget)
    assert budget.flops == flops
    with pytest.raises(LimitExceeded) as limit:
        plan_conv(
            [1, 1, 512, 768], torch.float32, [2, 1, 5, 5], spec, Budget(100_000, 1 << 32, 1e15)
        )
    assert limit.value.code == "elements_limit"


POOLS = [
    (PoolSpec("max", 2, 2), lambda x: F.max_pool2d(x, 2, 2)),
    (PoolSpec("max", 3, 2, 1, 2, True), lambda x: F.max_pool2d(x, 3, 2, 1, 2, ceil_mode=True)),
    (PoolSpec("avg", (2, 3)), lambda x: F.avg_pool2d(x, (2, 3))),
    (
        PoolSpec("avg", 3, 2, 1, count_include_pad=False, ceil_mode=True),
        lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    ),
    (PoolSpec("lp", 2, norm_type=3.0), lambda x: F.lp_pool2d(x, 3.0, 2)),
    (PoolSpec("lp", 3, 1), lambda x: F.lp_pool2d(x, 2.0, 3, 1)),
    (PoolSpec("adaptive_avg", output_size=(5, 7)), lambda x: F.adaptive_avg_pool2d(x, (5, 7))),
    (
        PoolSpec("adaptive_avg", output_size=(4, None)),
        lambda x: F.adaptive_avg_pool2d(x, (4, None)),
    ),
    (PoolSpec("adaptive_max", output_size=3), lambda x: F.adaptive_max_pool2d(x, 3)),
]


@pytest.mark.parametrize(("spec", "expected"), POOLS, ids=[spec.label for spec, _ in POOLS])
def test_pooling_kinds_match_torch(spec: PoolSpec, expected: object) -> None:
    x = torch.rand(2, 3, 17, 22, generator=torch.Generator().manual_seed(4))
    want = expected(x)  # type: ignore[operator]
    torch.testing.assert_close(pool2d(x, spec), want)
    assert plan_pool(spec, x.shape, x.dtype, big_budget()) == list(want.shape)


def test_the_tutorials_max_pooling() -> None:
    assert plan_pool(PoolSpec("max", 2, 2), [1, 2, 508, 764], torch.float32, big_budget()) == [
        1,
        2,
        254,
        382,
    ]
    with pytest.raises(OpError):
        plan_pool(PoolSpec("max", 2, padding=3), [1, 1, 8, 8], torch.float32, big_budget())


def test_as_batch_shapes_and_dtypes() -> None:
    assert as_batch(torch.zeros(4, 5, dtype=torch.int64)).shape == (1, 1, 4, 5)
    assert as_batch(torch.zeros(3, 4, 5)).shape == (1, 3, 4, 5)
    assert as_batch(torch.zeros(2, 3, 4, 5, dtype=torch.float64)).dtype == torch.float64
    assert as_batch(torch.zeros(2, 2, dtype=torch.bool)).dtype == torch.float32
    with pytest.raises(InvalidInput):
        as_batch(torch.zeros(1, 2, 3, 4, 5))
    with pytest.raises(InvalidInput):
        as_batch(torch.zeros(5))


def test_conv_flops_are_two_per_multiply_add() -> None:
    budget = big_budget()
    plan_conv(
        [2, 4, 10, 10], torch.float32, [6, 2, 3, 3], ConvSpec(kernel_size=3, groups=2), budget
    )
    assert budget.flops == 2 * (2 * 6 * 8 * 8) * 2 * 3 * 3
    assert math.isclose(gaussian_sigma(5), 1.1)
