"""The preset kernels of ``/conv``: the tutorial's ``edge`` and the classic filters, as
float64 ``[k, k]`` tensors of any odd size.

Larger sizes follow OpenCV: Sobel kernels as binomial smoothing times a derivative,
``laplacian`` as ``Laplacian(ksize=k)``, ``gaussian`` with OpenCV's default sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from schemas.vision import PRESET_NAMES
from service.errors import ErrorCode, InvalidInput

PRESETS = PRESET_NAMES
"""The preset names, as the schema lists them; ``random`` is drawn with the weight."""
DEFAULT_KERNEL_SIZE = 5
"""The tutorial's ``kersize``."""


def _binomial(n: int) -> list[float]:
    """Row ``n`` of Pascal's triangle: ``n + 1`` coefficients."""
    return [float(math.comb(n, i)) for i in range(n + 1)]


def _convolve(a: Sequence[float], b: Sequence[float]) -> list[float]:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _outer(rows: Sequence[float], cols: Sequence[float]) -> torch.Tensor:
    return torch.outer(
        torch.tensor(rows, dtype=torch.float64), torch.tensor(cols, dtype=torch.float64)
    )


def _unknown_kernel(name: str, where: str) -> InvalidInput:
    return InvalidInput(
        f"{where}unknown kernel {name[:64]!r}; presets: {', '.join(PRESETS)}, or an explicit "
        "kernel (a nested list)",
        details={"kernel": name[:64], "allowed": list(PRESETS)},
        code=ErrorCode.UNKNOWN_KERNEL,
    )


def check_kernel_name(name: str, index: int) -> None:
    """A 422 ``unknown_kernel`` for ``kernels[index]`` when ``name`` is not a preset."""
    if name not in PRESETS:
        raise _unknown_kernel(name, f"kernels[{index}]: ")


def gaussian_sigma(size: int) -> float:
    """OpenCV's default standard deviation for a ``size``-wide Gaussian kernel."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def preset_kernel(name: str, size: int, sigma: float | None = None) -> torch.Tensor:
    """The preset ``name`` as a ``[size, size]`` float64 kernel (``size`` odd, ≥ 3).

    ``random`` has no fixed values: it is drawn with the weight
    (:func:`service.ops.vision.weights.build_weight`).
    """
    if name not in PRESETS or name == "random":
        raise _unknown_kernel(name, "")
    if size < 3 or size % 2 == 0:
        raise InvalidInput(
            f"the preset kernel {name!r} needs an odd kernel_size of at least 3, got {size}",
            details={"kernel": name, "kernel_size": size},
            code=ErrorCode.INVALID_KERNEL_SIZE,
        )
    center = size // 2
    smooth = _binomial(size - 1)
    if name == "edge":
        # The tutorial: torch.ones(k, k) * -1 with k² - 1 in the centre (24 for 5×5).
        kernel = -torch.ones(size, size, dtype=torch.float64)
        kernel[center, center] = size * size - 1
        return kernel
    if name in ("sobel_x", "sobel_y"):
        derivative = _convolve(_binomial(size - 3), [-1.0, 0.0, 1.0])
        kernel = _outer(smooth, derivative)
        return kernel if name == "sobel_x" else kernel.T.contiguous()
    if name == "laplacian":
        return _laplacian(size)
    if name == "gaussian":
        s = sigma if sigma is not None else gaussian_sigma(size)
        # (d/s)², not d²/(2s²): 2s² underflows to 0 below s ≈ 1e-162 and the centre tap
        # became 0/0. This way a tiny s gives the limit, a delta (the centre's exp(0) = 1,
        # the others' exp(-inf) = 0), and a huge one the box (every exp(-0) = 1).
        ratio = (torch.arange(size, dtype=torch.float64) - center) / s
        line = torch.exp(-0.5 * ratio * ratio)
        kernel = torch.outer(line, line)
        return kernel / kernel.sum()
    if name == "box":
        return torch.full((size, size), 1.0 / (size * size), dtype=torch.float64)
    if name == "sharpen":
        kernel = -_laplacian(size)
        kernel[center, center] += 1.0
        return kernel
    # emboss: a ramp along the diagonal, 1 in the centre keeps the brightness.
    index = torch.arange(size, dtype=torch.float64) - center
    kernel = index[:, None] + index[None, :]
    kernel[center, center] = 1.0
    return kernel


def _laplacian(size: int) -> torch.Tensor:
    if size == 3:
        return torch.tensor(
            [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64
        )
    # OpenCV's Laplacian(ksize=k): the sum of the two second-derivative Sobel kernels.
    smooth = _binomial(size - 1)
    second = _convolve(_binomial(size - 3), [1.0, -2.0, 1.0])
    return _outer(smooth, second) + _outer(second, smooth)
