"""The preset kernels against their definitions (numpy references built in the test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.errors import InvalidInput
from service.ops.vision.kernels import PRESETS, gaussian_sigma, preset_kernel


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
