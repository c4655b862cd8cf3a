"""A request's weight against ``nn.Conv2d``: seeded ``random`` channels, presets and
explicit kernels, and the weight's refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget
from service.ops.vision.conv import ConvSpec, conv_forward
from service.ops.vision.kernels import PRESETS, preset_kernel
from service.ops.vision.weights import build_weight
from tests.unit.ops.vision.test_kernels import tutorial_kernel

CPU = torch.device("cpu")


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


def test_a_label_per_output_channel_is_charged_before_it_is_made() -> None:
    many = torch.ones(5000, 1, 1, 1)
    with pytest.raises(LimitExceeded) as info:
        build_weight(
            [many],
            ConvSpec(),
            1,
            torch.float32,
            seed=0,
            budget=Budget(1 << 30, 1 << 32, 1e15, max_objects=4999),
        )
    assert info.value.code == "objects_limit"
    spent = Budget(1 << 30, 1 << 32, 1e15)
    weight = build_weight([many], ConvSpec(), 1, torch.float32, seed=0, budget=spent)
    assert len(weight.labels) == 5000 and spent.objects == 5000
