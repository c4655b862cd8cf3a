"""POST /benchmark: the tutorial's chapter 1.2 matrix multiply."""

from __future__ import annotations

import time

import pytest
import torch
from fastapi.testclient import TestClient

from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings


def reference_norm(m: int, k: int, n: int, seed: int, dtype: torch.dtype) -> float:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=generator)
    b = torch.randn(k, n, generator=generator)
    c = torch.matmul(a.to(dtype), b.to(dtype))
    return float(torch.linalg.vector_norm(c, dtype=torch.float64))


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [("float32", 1e-6), ("float64", 1e-12), ("bfloat16", 1e-6), ("float16", 1e-6)],
)
def test_benchmark_times_and_checks_the_product(
    client: TestClient, dtype: str, rtol: float
) -> None:
    request = {
        "m": 96,
        "k": 64,
        "n": 80,
        "dtype": dtype,
        "repeats": 3,
        "warmup": 1,
        "seed": 7,
        "devices": ["cpu"],
    }
    body = client.post("/benchmark", json=request).json()
    assert body["torch_version"] == torch.__version__
    assert body["cuda_available"] == torch.cuda.is_available()
    assert body["flops_per_run"] == 2 * 96 * 64 * 80
    assert body["device"] == "cpu"
    assert body["max_norm_rel_diff"] is None
    [result] = body["results"]
    assert result["device"] == "cpu" and result["timer"] == "perf_counter"
    assert result["tf32"] is None
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["first_run_s"] > 0
    assert result["gflops"] == pytest.approx(2 * 96 * 64 * 80 / result["median_s"] / 1e9)
    expected = reference_norm(96, 64, 80, 7, getattr(torch, dtype))
    assert result["norm"] == pytest.approx(expected, rel=rtol)


def test_tutorial_sizes_reproduce() -> None:
    """Chapter 1.2: randn(10000, 1000) @ randn(1000, 2000) and the product's 2-norm.

    The tutorial printed a norm of about 1.4e5: ‖c‖ ≈ sqrt(m·n·k) for N(0, 1) entries.
    """
    app = create_app(
        make_settings(
            max_flops=1e12, max_elements=1 << 25, max_total_elements=1 << 26, request_timeout_s=120
        )
    )
    with TestClient(app) as client:
        body = client.post(
            "/benchmark", json={"repeats": 1, "warmup": 0, "seed": 0, "devices": ["cpu"]}
        ).json()
    assert (body["m"], body["k"], body["n"], body["dtype"]) == (10000, 1000, 2000, "float32")
    [result] = body["results"]
    assert result["norm"] == pytest.approx(
        reference_norm(10000, 1000, 2000, 0, torch.float32), rel=1e-5
    )
    assert result["norm"] == pytest.approx((10000 * 2000 * 1000) ** 0.5, rel=0.01)


def test_default_devices_are_every_available_one(client: TestClient) -> None:
    body = client.post("/benchmark", json={"m": 8, "k": 8, "n": 8, "repeats": 1}).json()
    expected = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    assert [r["device"] for r in body["results"]] == expected


@pytest.mark.gpu
def test_cuda_agrees_with_the_cpu(client: TestClient) -> None:
    body = client.post(
        "/benchmark", json={"m": 512, "k": 256, "n": 384, "seed": 1, "devices": ["cpu", "cuda"]}
    ).json()
    cpu, cuda = body["results"]
    assert cpu["device"] == "cpu"
    assert cuda["device"] == "cuda:0" and cuda["timer"] == "cuda_events"
    assert isinstance(cuda["tf32"], bool)
    assert body["max_norm_rel_diff"] < (1e-2 if cuda["tf32"] else 1e-5)


def test_absent_device_is_422(client: TestClient) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    body = assert_error(
        client.post("/benchmark", json={"devices": ["cuda:0"]}), 422, "device_unavailable"
    )
    assert body["details"]["available"] == ["cpu"]


def test_over_the_flop_limit_is_413(client: TestClient, settings) -> None:
    request = {"m": 2000, "k": 2000, "n": 2000, "devices": ["cpu"]}
    body = assert_error(client.post("/benchmark", json=request), 413, "flops_limit")
    runs = 1 + 1 + 5  # cold + warm-up + repeats, every one counted
    assert body["details"] == {
        "limit": "max_flops",
        "allowed": settings.limits.max_flops,
        "requested": 2 * 2000**3 * runs,
    }
    assert client.get("/health").status_code == 200


def test_tutorial_sizes_are_over_the_small_element_limit(client: TestClient, settings) -> None:
    body = assert_error(client.post("/benchmark", json={}), 413, "elements_limit")
    assert body["details"]["requested"] == 10000 * 1000


def test_bad_dtype_is_422(client: TestClient) -> None:
    assert_error(client.post("/benchmark", json={"dtype": "int64"}), 422, "validation_error")


def test_a_float16_benchmark_on_the_cpu_is_refused_in_milliseconds() -> None:
    """4096³ in float16 on a CPU of 1 GFLOP/s is 137 s a multiplication: refused by the
    plan, before anything is drawn, not stopped at the deadline."""
    rates = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}
    settings = make_settings(
        device="cpu",
        calibration=rates,
        request_timeout_s=30.0,
        max_elements=1 << 24,
        max_total_elements=1 << 26,
        max_flops=1e13,
        isolate=False,  # the refusal is the plan's, made before any worker is used
    )
    body = {"m": 4096, "k": 4096, "n": 4096, "dtype": "float16", "devices": ["cpu"]}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        start = time.perf_counter()
        error = assert_error(client.post("/benchmark", json=body), 413, "over_time_budget")
        assert time.perf_counter() - start < 1.0
        assert error["details"]["limit"] == "request_timeout_s"
        assert error["details"]["requested"] >= 7 * 2 * 4096**3 / 1e9
        small = {**body, "m": 64, "k": 64, "n": 64, "repeats": 2}
        response = client.post("/benchmark", json=small)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["device"] == "cpu"
