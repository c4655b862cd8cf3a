"""The ``gaussian`` preset at the ends of ``sigma``'s range: its limits, a delta as sigma → 0
and the box as sigma → ∞, never NaN (directly and through ``POST /conv``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from fastapi.testclient import TestClient

from service.ops.vision.kernels import preset_kernel

TINY_SIGMAS = [1e-300, 5e-324, 1e-170, 1e-3]
"""Down to the smallest float: 2·sigma² underflowed to 0 below about 1e-162."""
HUGE_SIGMAS = [1e4, 1e150, 1e300, float("inf")]


def delta(size: int) -> torch.Tensor:
    kernel = torch.zeros(size, size, dtype=torch.float64)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def box(size: int) -> torch.Tensor:
    return torch.full((size, size), 1.0 / (size * size), dtype=torch.float64)


@pytest.mark.parametrize("size", [3, 5, 63])
@pytest.mark.parametrize("sigma", TINY_SIGMAS)
def test_a_tiny_sigma_gives_the_delta(size: int, sigma: float) -> None:
    torch.testing.assert_close(preset_kernel("gaussian", size, sigma), delta(size))


@pytest.mark.parametrize("size", [3, 5, 63])
@pytest.mark.parametrize("sigma", HUGE_SIGMAS)
def test_a_huge_sigma_gives_the_box(size: int, sigma: float) -> None:
    kernel = preset_kernel("gaussian", size, sigma)
    assert bool(torch.isfinite(kernel).all())
    # Within 1e-5 of the box at sigma 1e4 and size 63: exp(-31²/(2·10⁸)) ≈ 1 - 5e-6.
    torch.testing.assert_close(kernel, box(size), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize(
    ("sigma", "expected"),
    [(1e-300, delta(3)), (5e-324, delta(3)), (1e4, box(3))],
)
def test_conv_with_an_extreme_sigma_equals_torch(
    client: TestClient, sigma: float, expected: torch.Tensor
) -> None:
    image = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    for padding in (0, "same"):
        response = client.post(
            "/conv",
            json={
                "input": image,
                "kernels": ["gaussian"],
                "kernel_size": 3,
                "sigma": sigma,
                "padding": padding,
            },
        )
        assert response.status_code == 200, response.text
        assert "NaN" not in response.text
        body = response.json()
        weight = torch.tensor(body["weight"]["data"], dtype=torch.float32)
        output = torch.tensor(body["output"]["data"], dtype=torch.float32)
        kernel = expected.to(torch.float32).reshape(1, 1, 3, 3)
        x = torch.tensor(image).reshape(1, 1, 3, 3)
        reference = F.conv2d(x, kernel, padding=1 if padding == "same" else 0)
        torch.testing.assert_close(weight, kernel, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)
        if padding == "same" and sigma < 1:
            assert output.reshape(3, 3).tolist() == image  # the delta keeps the picture
