"""The timed matrix multiply of ``/benchmark`` without HTTP: timings, product, norm diffs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from schemas.benchmark import BenchmarkResult
from service.errors import ComputeTimeout
from service.limits import Deadline
from service.ops.benchmark.matmul import matmul_benchmark, max_norm_rel_diff
from service.ops.context import make_generator

CPU = torch.device("cpu")


def reference_product(m: int, k: int, n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    generator = make_generator(seed)
    a = torch.randn(m, k, generator=generator)
    b = torch.randn(k, n, generator=generator)
    return torch.matmul(a.to(dtype), b.to(dtype))


def timed(m: int, k: int, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    options: dict[str, Any] = {"repeats": 3, "warmup": 1, "seed": 5, "deadline": Deadline(30)}
    options.update(kwargs)
    devices = options.pop("devices", [CPU])
    dtype = options.pop("dtype", torch.float32)
    return matmul_benchmark(m, k, n, dtype, devices, **options)


# --- max_norm_rel_diff -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "norms",
    [
        [10.0, 10.0],
        [10.0, 10.5],
        [4.0, 3.0, 5.0],
        [2.5, 2.5, 2.5000001, 2.4999],
        [1e5, 1e5 * (1 + 1e-6)],
    ],
)
def test_max_norm_rel_diff_matches_numpy(norms: list[float]) -> None:
    expected = np.max(np.abs(np.array(norms[1:]) - norms[0]) / abs(norms[0]))
    got = max_norm_rel_diff([{"norm": norm} for norm in norms])
    assert got == pytest.approx(float(expected), rel=1e-12, abs=0.0)


def test_max_norm_rel_diff_of_a_zero_reference_is_absolute() -> None:
    """A zero first norm cannot scale the difference; it is then taken as is."""
    norms = [0.0, 0.25, -0.5]
    expected = np.max(np.abs(np.array(norms[1:]) - norms[0]))
    assert max_norm_rel_diff([{"norm": norm} for norm in norms]) == pytest.approx(expected)


@pytest.mark.parametrize("count", [0, 1])
def test_max_norm_rel_diff_needs_two_devices(count: int) -> None:
    assert max_norm_rel_diff([{"norm": 3.0}] * count) is None


# --- matmul_benchmark ------------------------------------------------------------------------


def test_timings_have_the_response_structure() -> None:
    [result] = timed(24, 16, 20)
    assert set(result) == set(BenchmarkResult.model_fields)
    BenchmarkResult.model_validate(result)
    assert result["device"] == "cpu"
    assert result["timer"] == "perf_counter" and result["tf32"] is None
    assert result["first_run_s"] > 0
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["gflops"] == pytest.approx(2 * 24 * 16 * 20 / result["median_s"] / 1e9)


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [(torch.float32, 1e-6), (torch.float64, 1e-12), (torch.bfloat16, 1e-6)],
)
def test_norm_is_the_norm_of_torch_matmul(dtype: torch.dtype, rtol: float) -> None:
    [result] = timed(33, 17, 29, seed=11, dtype=dtype)
    product = reference_product(33, 17, 29, 11, dtype)
    expected = float(torch.linalg.vector_norm(product, dtype=torch.float64))
    assert result["norm"] == pytest.approx(expected, rel=rtol)


def test_the_product_is_torch_matmul_of_the_seeded_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every multiplication (cold, warm-up, repeats) is ``a @ b`` of the seeded inputs."""
    products: list[torch.Tensor] = []
    matmul = torch.matmul

    def recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        products.append(matmul(a, b))
        return products[-1]

    monkeypatch.setattr(torch, "matmul", recording)
    timed(12, 7, 9, seed=3, repeats=4, warmup=2)
    monkeypatch.undo()
    expected = reference_product(12, 7, 9, 3, torch.float32)
    assert len(products) == 1 + 2 + 4
    for product in products:
        torch.testing.assert_close(product, expected, rtol=0, atol=0)


def test_a_seed_gives_the_same_norm_and_no_seed_fresh_numbers() -> None:
    first, second = timed(16, 8, 12, seed=42), timed(16, 8, 12, seed=42)
    assert first[0]["norm"] == second[0]["norm"]
    unseeded = {timed(16, 8, 12, seed=None)[0]["norm"] for _ in range(3)}
    assert len(unseeded) == 3


def test_one_result_per_device_in_order() -> None:
    results = timed(8, 8, 8, devices=[CPU, CPU])
    assert [r["device"] for r in results] == ["cpu", "cpu"]
    assert results[0]["norm"] == results[1]["norm"]
    assert max_norm_rel_diff(results) == 0.0


def test_a_passed_deadline_stops_the_work() -> None:
    deadline = Deadline(30)
    deadline.cancelled = True
    with pytest.raises(ComputeTimeout):
        timed(8, 8, 8, deadline=deadline)
