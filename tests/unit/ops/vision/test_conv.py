"""Convolution against torch: shapes planned on ``meta``, charged FLOPs, the forward pass
with its activation and pooling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import LimitExceeded, OpError
from service.limits import Budget
from service.ops.nn.activations import bind
from service.ops.vision.conv import ConvSpec, conv_forward, plan_conv
from service.ops.vision.kernels import gaussian_sigma
from service.ops.vision.pool import PoolSpec
from service.ops.vision.weights import build_weight

CPU = torch.device("cpu")


def big_budget() -> Budget:
    return Budget(1 << 30, 1 << 32, 1e15)


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


def test_conv_flops_are_two_per_multiply_add() -> None:
    budget = big_budget()
    plan_conv(
        [2, 4, 10, 10], torch.float32, [6, 2, 3, 3], ConvSpec(kernel_size=3, groups=2), budget
    )
    assert budget.flops == 2 * (2 * 6 * 8 * 8) * 2 * 3 * 3
    assert math.isclose(gaussian_sigma(5), 1.1)
