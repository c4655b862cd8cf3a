"""Matrix products of 16-bit floats on a CPU: long or thin ones run in float32."""

from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional

from service.calibration import Throughput
from service.limits import HALF_PRODUCT_MAX_K, Budget, widened_product
from service.ops import products
from service.ops.autograd.functions import FUNCTIONS

HALF = [torch.float16, torch.bfloat16]


def _draw(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).to(dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_a_long_half_linear_runs_in_float32(dtype: torch.dtype) -> None:
    """torch's float16 linear whose reduction passes 2¹⁹ fell to 0.1 GFLOP/s on a CPU
    ([16, 2²⁰] by [16, 2²⁰]ᵀ: seconds); in float32 it takes milliseconds."""
    x, w = (
        _draw(16, 2 * HALF_PRODUCT_MAX_K, dtype=dtype),
        _draw(16, 2 * HALF_PRODUCT_MAX_K, dtype=dtype),
    )
    b = _draw(16, dtype=dtype)
    start = time.perf_counter()
    out = products.linear(x, w, b)
    assert time.perf_counter() - start < 1.0
    assert out.dtype == dtype
    assert torch.equal(out, functional.linear(x.float(), w.float(), b.float()).to(dtype))


@pytest.mark.parametrize("dtype", HALF)
def test_a_thin_half_matmul_runs_in_float32(dtype: torch.dtype) -> None:
    a, b = _draw(2, 4096, dtype=dtype), _draw(4096, 2, dtype=dtype)
    assert torch.equal(products.matmul(a, b), (a.float() @ b.float()).to(dtype))


@pytest.mark.parametrize("dtype", [*HALF, torch.float32])
def test_square_products_and_other_dtypes_run_as_torch_runs_them(dtype: torch.dtype) -> None:
    a, b = _draw(64, 64, dtype=dtype), _draw(64, 64, dtype=dtype)
    assert torch.equal(products.matmul(a, b), torch.matmul(a, b))
    assert torch.equal(products.linear(a, b), functional.linear(a, b))
    long = _draw(2, 2 * HALF_PRODUCT_MAX_K, dtype=torch.float32)
    assert not widened_product(long.shape, long.T.shape, torch.float32, "cpu")
    assert not widened_product((2, 2 << 20), (2 << 20, 2), dtype, "cuda")
    with pytest.raises(TypeError):
        products.matmul(a, 2)  # type: ignore[arg-type]  # torch's own refusal


def test_a_widened_product_is_charged_at_float32s_rate_with_its_copies() -> None:
    rates = Throughput("cpu", {"float32": 1e11, "float16": 1e13}, 1e9)

    def charged(a: tuple[int, ...], b: tuple[int, ...], dtype: torch.dtype) -> Budget:
        budget = Budget(1 << 30, 1 << 34, 1e15, throughput=rates, max_seconds=1e9)
        budget.charge_matmul(a, b, "the product", dtype)
        return budget

    square = charged((512, 512), (512, 512), torch.float16)
    assert square.elements == 0  # in float16, at its (fast) rate
    assert square.seconds < charged((512, 512), (512, 512), torch.float32).seconds
    thin = charged((2, 1 << 20), (1 << 20, 2), torch.float16)
    assert thin.elements == 2 * (1 << 21) + 4  # float32 copies of a, b and the product
    as_float32 = charged((2, 1 << 20), (1 << 20, 2), torch.float32)
    # float32's FLOPs and reads; the copies written, and converted there and back
    assert thin.seconds == pytest.approx(as_float32.seconds + 3 * thin.elements / 1e9)


@pytest.mark.parametrize("name", ["matmul", "mm", "mv", "dot"])
@pytest.mark.parametrize("dtype", HALF)
def test_every_product_of_grad_runs_a_thin_half_one_in_float32(
    name: str, dtype: torch.dtype
) -> None:
    a = _draw(2, 4096, dtype=dtype) if name in ("matmul", "mm", "mv") else _draw(4096, dtype=dtype)
    b = {"matmul": _draw(4096, 2, dtype=dtype), "mm": _draw(4096, 2, dtype=dtype)}.get(
        name, _draw(4096, dtype=dtype)
    )
    fn = getattr(torch, name)
    got = FUNCTIONS[name].fn(a, b)
    assert torch.equal(got, fn(a.float(), b.float()).to(dtype))
