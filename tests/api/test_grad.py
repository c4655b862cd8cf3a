"""``POST /grad`` over HTTP: the tutorial's chapter 5, hessians, errors, limits, hostile text.

Reference values are computed here by torch itself, never pasted.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.autograd import CHAPTER_5, HESSIAN_EXAMPLE, MAX_EXPRESSION_LENGTH, MAX_HESSIAN_ELEMENTS
from service.config import Settings
from service.main import create_app
from tests.api.test_system import assert_error
from tests.api.test_tensor_ops import wire_to_torch
from tests.conftest import CUDA, make_settings


def grad(client: TestClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = client.post("/grad", json=body, params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- the tutorial ----------------------------------------------------------------------------


def test_chapter_5(client: TestClient) -> None:
    body = grad(client, CHAPTER_5)
    # The tutorial prints [[4, 6], [8, 10]]; d/dx (x² + 2x + 1) = 2x + 2.
    assert body["value"] == {"shape": [], "dtype": "float32", "data": 54.0}
    assert body["grads"] == {
        "x": {"shape": [4, 1], "dtype": "float32", "data": [[4.0], [6.0], [8.0], [10.0]]}
    }
    assert body["device"] == ("cuda:0" if CUDA else "cpu")
    assert body["elapsed_ms"] >= 0
    assert "hessians" not in body
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]], requires_grad=True)
    y = torch.sum(x**2 + 2 * x + 1)
    y.backward()
    assert x.grad is not None
    assert body["grads"]["x"]["data"] == x.grad.tolist()
    assert body["value"]["data"] == y.item()


def test_chapter_5_in_base64(client: TestClient) -> None:
    body = grad(client, CHAPTER_5, encoding="b64")
    assert set(body["grads"]["x"]) == {"shape", "dtype", "b64"}
    raw = np.frombuffer(base64.b64decode(body["grads"]["x"]["b64"]), dtype="<f4")
    assert raw.tolist() == [4.0, 6.0, 8.0, 10.0]
    assert wire_to_torch(body["value"]).item() == 54.0


def test_inputs_in_every_wire_form(client: TestClient) -> None:
    x = np.array([1.0, -2.0], dtype="<f8")
    body = grad(
        client,
        {
            "expression": "sum(a * b) + sum(c ** 2)",
            "inputs": {
                "a": [1.5, 2.5],
                "b": {"data": [3.0, 4.0], "dtype": "float64"},
                "c": {"b64": base64.b64encode(x.tobytes()).decode(), "shape": [2], "dtype": "FP64"},
            },
            "wrt": ["c", "b"],
        },
    )
    assert list(body["grads"]) == ["c", "b"]
    assert body["grads"]["c"] == {"shape": [2], "dtype": "float64", "data": [2.0, -4.0]}
    assert body["grads"]["b"] == {"shape": [2], "dtype": "float64", "data": [1.5, 2.5]}
    assert body["value"]["dtype"] == "float64"


def test_a_small_network_against_torch(client: TestClient) -> None:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=generator)
    b = torch.randn(4, generator=generator)
    x = torch.randn(3, generator=generator)
    body = grad(
        client,
        {
            "expression": "mean(relu(w @ x + b) ** 2) + 0.01 * norm(w) ** 2",
            "inputs": {"w": w.tolist(), "b": b.tolist(), "x": x.tolist()},
            "wrt": ["w", "b"],
        },
    )
    leaves = [w.clone().requires_grad_(True), b.clone().requires_grad_(True)]
    value = (
        torch.mean(torch.relu(leaves[0] @ x + leaves[1]) ** 2) + 0.01 * torch.norm(leaves[0]) ** 2
    )
    expected = torch.autograd.grad(value, leaves)
    torch.testing.assert_close(wire_to_torch(body["value"]), value.detach())
    torch.testing.assert_close(wire_to_torch(body["grads"]["w"]), expected[0])
    torch.testing.assert_close(wire_to_torch(body["grads"]["b"]), expected[1])


def test_non_finite_values_travel_as_strings(client: TestClient) -> None:
    body = grad(client, {"expression": "sum(log(x))", "inputs": {"x": [0.0, 1.0]}})
    assert body["value"]["data"] == "-Infinity"
    assert body["grads"]["x"]["data"] == ["Infinity", 1.0]


# --- hessians --------------------------------------------------------------------------------


def test_hessian_against_torch(client: TestClient) -> None:
    body = grad(client, HESSIAN_EXAMPLE)
    x = torch.tensor(HESSIAN_EXAMPLE["inputs"]["x"]["data"])
    w = torch.tensor(HESSIAN_EXAMPLE["inputs"]["w"])
    expected = torch.autograd.functional.hessian(
        lambda x, w: torch.sum(w * x**2) + torch.dot(w, x), (x, w)
    )
    assert set(body["hessians"]) == {"x", "w"}
    for i, a in enumerate(["x", "w"]):
        assert set(body["hessians"][a]) == {"x", "w"}
        for j, b in enumerate(["x", "w"]):
            block = body["hessians"][a][b]
            assert block["shape"] == [2, 2]
            torch.testing.assert_close(wire_to_torch(block), expected[i][j])


def test_hessian_of_a_matrix_input(client: TestClient) -> None:
    w = torch.tensor([[0.5, -1.0], [0.25, 2.0]], dtype=torch.float64)
    body = grad(
        client,
        {
            "expression": "sum(sigmoid(w) ** 2) + trace(w @ w)",
            "inputs": {"w": {"data": w.tolist(), "dtype": "float64"}},
            "hessian": True,
        },
        encoding="b64",
    )
    expected = torch.autograd.functional.hessian(
        lambda w: torch.sum(torch.sigmoid(w) ** 2) + torch.trace(w @ w), w
    )
    block = body["hessians"]["w"]["w"]
    assert block["shape"] == [2, 2, 2, 2]
    torch.testing.assert_close(wire_to_torch(block), expected)


def test_hessian_over_its_limit_is_413(client: TestClient) -> None:
    body = {
        "expression": "sum(x ** 3)",
        "inputs": {"x": {"data": [0.0] * (MAX_HESSIAN_ELEMENTS + 1), "dtype": "float32"}},
        "hessian": True,
    }
    payload = assert_error(client.post("/grad", json=body), 413, "hessian_elements_limit")
    assert payload["details"] == {
        "limit": "max_hessian_elements",
        "allowed": MAX_HESSIAN_ELEMENTS,
        "requested": MAX_HESSIAN_ELEMENTS + 1,
    }


# --- errors ----------------------------------------------------------------------------------


def test_a_non_scalar_value_suggests_sum(client: TestClient) -> None:
    body = {"expression": "x**2 + 2*x + 1", "inputs": CHAPTER_5["inputs"]}
    payload = assert_error(client.post("/grad", json=body), 422, "not_scalar")
    assert "sum(x**2 + 2*x + 1)" in payload["error"]
    assert payload["details"]["shape"] == [4, 1]


def test_an_integer_gradient_says_to_use_a_float_dtype(client: TestClient) -> None:
    body = {"expression": "sum(x**2)", "inputs": {"x": [[1], [2], [3], [4]]}}
    payload = assert_error(client.post("/grad", json=body), 422, "integer_gradient")
    assert "float" in payload["error"]
    assert payload["details"] == {"name": "x", "dtype": "int64"}
    body = {"expression": "sum(x * n)", "inputs": {"x": [1.0], "n": [2]}, "wrt": ["n"]}
    assert_error(client.post("/grad", json=body), 422, "integer_gradient")


def test_integer_inputs_join_float_ones(client: TestClient) -> None:
    body = grad(client, {"expression": "sum(x * n)", "inputs": {"x": [1.0, 2.0], "n": [3, 4]}})
    assert list(body["grads"]) == ["x"]
    assert body["grads"]["x"]["data"] == [3.0, 4.0]


def test_unknown_names_and_functions_list_the_allowed_ones(client: TestClient) -> None:
    body = {"expression": "sum(z)", "inputs": {"x": [1.0]}}
    payload = assert_error(client.post("/grad", json=body), 422, "unknown_name")
    assert payload["details"]["known"] == ["x", "pi", "e", "inf"]
    assert payload["details"]["column"] == 4
    body = {"expression": "softmin(x, 0)", "inputs": {"x": [1.0]}}
    payload = assert_error(client.post("/grad", json=body), 422, "unknown_function")
    assert "sum" in payload["details"]["allowed"]
    assert "sigmoid" in payload["error"]
    body = {"expression": "sum(x)", "inputs": {"x": [1.0]}, "wrt": ["y"]}
    assert_error(client.post("/grad", json=body), 422, "unknown_name")


def test_a_syntax_error_gives_the_column(client: TestClient) -> None:
    body = {"expression": "sum(x**2 +)", "inputs": {"x": [1.0]}}
    payload = assert_error(client.post("/grad", json=body), 422, "expression_syntax")
    assert payload["details"]["column"] == 10
    assert "column 10" in payload["error"]


def test_torch_errors_are_422_with_the_column(client: TestClient) -> None:
    body = {"expression": "sum(x @ y)", "inputs": {"x": [1.0, 2.0], "y": [1.0, 2.0, 3.0]}}
    payload = assert_error(client.post("/grad", json=body), 422, "op_failed")
    assert payload["details"]["column"] == 4
    assert "'x @ y'" in payload["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"expression": "x", "inputs": {"x": 1.0}, "extra": 1},
        {"expression": "", "inputs": {"x": 1.0}},
        {"expression": 1, "inputs": {"x": 1.0}},
        {"expression": "x", "inputs": {"x-y": 1.0}},
        {"expression": "x", "inputs": {"x": 1.0}, "hessian": 1},
        {"expression": "x", "inputs": {"x": 1.0}, "wrt": "x"},
        {"inputs": {"x": 1.0}},
    ],
)
def test_invalid_bodies_are_validation_errors(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/grad", json=body), 422, "validation_error")


def test_a_bad_tensor_is_422(client: TestClient) -> None:
    body = {"expression": "sum(x)", "inputs": {"x": [[1.0, 2.0], [3.0]]}}
    assert_error(client.post("/grad", json=body), 422, "ragged_tensor")


def test_an_unavailable_device_is_422(client: TestClient) -> None:
    body = {**CHAPTER_5, "device": "cuda:7"}
    assert_error(client.post("/grad", json=body), 422, "device_unavailable")


# --- limits ----------------------------------------------------------------------------------


def test_a_huge_intermediate_is_refused_before_allocation(
    client: TestClient, settings: Settings
) -> None:
    n = 5000  # x + y broadcasts to n² = 25·10^6 elements, over the test limit of 2^22
    body = {
        "expression": "sum(x + y)",
        "inputs": {
            "x": {"data": [0.0] * n, "shape": [n, 1], "dtype": "float32"},
            "y": {"data": [0.0] * n, "shape": [1, n], "dtype": "float32"},
        },
    }
    start = time.perf_counter()
    payload = assert_error(client.post("/grad", json=body), 413, "elements_limit")
    assert time.perf_counter() - start < 1.0
    assert payload["details"]["limit"] == "max_elements"
    assert payload["details"]["allowed"] == settings.limits.max_elements
    assert payload["details"]["requested"] == n * n


def test_the_flop_limit_applies() -> None:
    with TestClient(create_app(make_settings(max_flops=1e6))) as small:
        body = {
            "expression": "sum(a @ a)",
            "inputs": {"a": {"data": [0.0] * 10000, "shape": [100, 100], "dtype": "float32"}},
        }
        payload = assert_error(small.post("/grad", json=body), 413, "flops_limit")
        assert payload["details"]["limit"] == "max_flops"


def test_a_long_expression_is_413(client: TestClient) -> None:
    body = {"expression": "x" + "+x" * MAX_EXPRESSION_LENGTH, "inputs": {"x": 1.0}}
    payload = assert_error(client.post("/grad", json=body), 413, "expression_length_limit")
    assert payload["details"]["allowed"] == MAX_EXPRESSION_LENGTH


SMALL_LIMITS = {
    "max_expression_length": 24,
    "max_expression_nodes": 8,
    "max_expression_depth": 4,
    "max_hessian_elements": 3,
}


def test_configured_expression_and_hessian_limits_are_413() -> None:
    limits = SMALL_LIMITS
    long = "x" + " + x" * 6
    nodes = "sum(x * 2) + sum(x * 3)"  # 12 nodes, 4 levels deep: only the node limit
    refused = [
        (long, "max_expression_length", len(long)),
        (nodes, "max_expression_nodes", limits["max_expression_nodes"] + 1),
        ("(" * 5 + "x" + ")" * 5, "max_expression_depth", 5),  # the brackets
        ("-(-(-(-x)))", "max_expression_depth", limits["max_expression_depth"] + 1),  # the tree
    ]
    with TestClient(create_app(make_settings(**limits))) as small:
        for text, limit, requested in refused:
            body = {"expression": text, "inputs": {"x": [1.0, 2.0]}}
            code = f"{limit.removeprefix('max_')}_limit"
            payload = assert_error(small.post("/grad", json=body), 413, code)
            assert payload["details"] == {
                "limit": limit,
                "allowed": limits[limit],
                "requested": requested,
            }
            assert isinstance(payload["details"]["requested"], int)
        x = [0.5, -1.0, 2.0]  # the hessian at its limit, then one element over it
        body = grad(small, {"expression": "sum(x ** 3)", "inputs": {"x": x}, "hessian": True})
        expected = torch.autograd.functional.hessian(lambda t: torch.sum(t**3), torch.tensor(x))
        torch.testing.assert_close(wire_to_torch(body["hessians"]["x"]["x"]), expected)
        body = {"expression": "sum(x ** 3)", "inputs": {"x": [*x, 1.0]}, "hessian": True}
        payload = assert_error(small.post("/grad", json=body), 413, "hessian_elements_limit")
        assert payload["details"] == {"limit": "max_hessian_elements", "allowed": 3, "requested": 4}


# --- hostile text ----------------------------------------------------------------------------

HOSTILE = [
    "__import__('os').system('id')",
    "x.__class__.__mro__[1].__subclasses__()",
    "x.__class__.__init__.__globals__",
    "(lambda: 0)()",
    "lambda: __import__('os')",
    "[c for c in x]",
    "sum(c for c in x)",
    "{c: c for c in x}",
    "9**9**9**9",
    "'a'*10**9",
    "(" * 10000 + "x" + ")" * 10000,
    "+".join(["x"] * 20000),
    "open('/etc/passwd').read()",
    "open(x)",
    "globals()",
    "x if x else x",
    "getattr(x, 'grad')",
    "-" * 4000 + "x",
    "exp(" * 1000 + "x" + ")" * 1000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_expressions_are_4xx_within_a_second(client: TestClient, text: str) -> None:
    start = time.perf_counter()
    response = client.post("/grad", json={"expression": text, "inputs": {"x": [1.0, 2.0]}})
    assert time.perf_counter() - start < 1.0
    assert response.status_code in (413, 422), response.text
    assert set(response.json()) == {"error", "code", "details"}
    assert client.get("/health").json() == {"status": "ok"}
    assert grad(client, CHAPTER_5)["value"]["data"] == 54.0


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.text(max_size=60))
def test_arbitrary_text_is_never_a_500(client: TestClient, text: str) -> None:
    response = client.post(
        "/grad", json={"expression": text, "inputs": {"x": [1.0, 2.0], "m": [[1.0, 2.0]]}}
    )
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code != 200:
        assert response.json()["code"] != "internal_error"


# --- devices ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_chapter_5_on_cuda(client: TestClient) -> None:
    body = grad(client, {**CHAPTER_5, "device": "cuda", "hessian": True})
    assert body["device"] == "cuda:0"
    assert body["grads"]["x"]["data"] == [[4.0], [6.0], [8.0], [10.0]]
    expected = 2 * torch.eye(4).reshape(4, 1, 4, 1)
    torch.testing.assert_close(wire_to_torch(body["hessians"]["x"]["x"]), expected)


def test_cpu_can_be_asked_for(client: TestClient) -> None:
    assert grad(client, {**CHAPTER_5, "device": "cpu"})["device"] == "cpu"


# --- every intermediate, the backward pass and each hessian row charged -----------------------


@pytest.fixture(scope="module")
def calibrated() -> Iterator[TestClient]:
    """Fixed device rates (float16 matmuls 100 times slower than float32) and a limit of
    10 s."""
    rates = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}
    settings = make_settings(
        device="cpu",
        calibration=rates,
        request_timeout_s=10.0,
        max_elements=1 << 24,
        max_total_elements=1 << 27,
        max_flops=2e12,
        isolate=False,  # every refusal here is the plan's, made before any worker is used
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as app:
        yield app


def refused_fast(client: TestClient, body: dict[str, Any], status: int, code: str) -> Any:
    start = time.perf_counter()
    payload = assert_error(client.post("/grad", json=body), status, code)
    assert time.perf_counter() - start < 1.0
    assert client.get("/health").status_code == 200
    return payload


def test_a_float16_matmul_is_predicted_at_the_float16_rate(calibrated: TestClient) -> None:
    """[4096, 4096] @ [4096, 4096] in float16 is 137 s at 1 GFLOP/s."""
    x = {"data": [0.5] * 4096, "dtype": "float16"}
    body = {"expression": "sum(outer(x, x) @ outer(x, x))", "inputs": {"x": x}}
    payload = refused_fast(calibrated, body, 413, "over_time_budget")
    assert payload["details"]["limit"] == "request_timeout_s"
    assert payload["details"]["requested"] >= 2 * 4096**3 / 1e9
    small = {"expression": "sum(outer(x, x) @ outer(x, x))", "inputs": {"x": [0.5] * 64}}
    assert grad(calibrated, small)["value"]["data"] == pytest.approx(0.5**4 * 64**3)


def test_every_hessian_row_is_a_pass_through_the_expression(calibrated: TestClient) -> None:
    """A 1000-node expression over 1024 elements: 1024 backward passes from Python (14 s on
    a CPU, measured), predicted at 20 s, over the limit of 10 s."""
    wide = " + ".join(["sum(sin(x) * cos(x) * exp(x) * x)"] * 60)
    body = {"expression": wide, "inputs": {"x": [0.5] * 1024}, "hessian": True}
    payload = refused_fast(calibrated, body, 413, "over_time_budget")
    assert payload["details"]["limit"] == "request_timeout_s"
    result = grad(calibrated, {**body, "inputs": {"x": [0.5] * 8}})
    assert wire_to_torch(result["hessians"]["x"]["x"]).shape == (8, 8)


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("sum(reshape(z, (0, 4611686018427387904)))", 413, "elements_limit"),
        ("sum(z[None, None, None, None, None, None, None, None, None])", 422, "too_many_dims"),
    ],
)
def test_intermediates_obey_the_shape_rule(
    client: TestClient, text: str, status: int, code: str
) -> None:
    refused_fast(client, {"expression": text, "inputs": {"z": []}}, status, code)


def float32_b64(tensor: torch.Tensor) -> dict[str, Any]:
    """A float32 tensor in the wire's base64 form."""
    raw = tensor.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
    return {"b64": base64.b64encode(raw).decode(), "shape": list(tensor.shape), "dtype": "float32"}


def test_a_broadcast_matmuls_copies_of_its_operands_are_charged(
    client: TestClient, settings: Settings
) -> None:
    """[128, 1, 1, 512] @ [1, 128, 512, 1]: torch copies each operand out to the broadcast
    batch of 128 × 128 (8.4 million elements each, over the test limit of 2^22) for 131,072
    elements of inputs and 16,384 of output."""
    x, y = torch.zeros(128, 1, 1, 512), torch.zeros(1, 128, 512, 1)
    body = {"expression": "sum(x @ y)", "inputs": {"x": float32_b64(x), "y": float32_b64(y)}}
    payload = refused_fast(client, body, 413, "elements_limit")
    assert payload["details"] == {
        "limit": "max_elements",
        "allowed": settings.limits.max_elements,
        "requested": 128 * 128 * 512,
        "column": 4,
    }
    generator = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(3, 1, 2, 4, generator=generator),
        torch.randn(1, 5, 4, 2, generator=generator),
    )
    result = grad(
        client, {"expression": "sum(x @ y)", "inputs": {"x": x.tolist(), "y": y.tolist()}}
    )
    leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
    value = torch.sum(leaves[0] @ leaves[1])
    expected = torch.autograd.grad(value, leaves)
    torch.testing.assert_close(wire_to_torch(result["value"]), value.detach())
    torch.testing.assert_close(wire_to_torch(result["grads"]["x"]), expected[0])
    torch.testing.assert_close(wire_to_torch(result["grads"]["y"]), expected[1])


def cumprod_body(n: int, *, hessian: bool) -> dict[str, Any]:
    z = torch.ones(n)
    z[5] = 0.0  # a zero: torch's cumprod backward then takes its quadratic path
    return {
        "expression": "sum(cumprod(w * z, 0))",
        "inputs": {"w": [1.0], "z": float32_b64(z)},
        "wrt": ["w"],
        "hessian": hessian,
    }


def test_cumprods_quadratic_double_backward_is_charged(
    client: TestClient, settings: Settings
) -> None:
    """With a zero in its input and a graph to build for the hessian, torch's cumprod
    backward loops over the n elements, keeping n²/2 of them and more (n = 16,000: 0.8 GB
    and 5.5 s measured on a CPU); without the hessian it is linear (milliseconds)."""
    payload = refused_fast(client, cumprod_body(16000, hessian=True), 413, "total_elements_limit")
    assert payload["details"]["limit"] == "max_total_elements"
    assert payload["details"]["allowed"] == settings.limits.max_total_elements
    assert payload["details"]["requested"] > settings.limits.max_total_elements
    assert payload["details"]["column"] == 4

    def value(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.sum(torch.cumprod(w * z, 0))

    for n, hessian in [(16000, False), (64, True)]:
        body = cumprod_body(n, hessian=hessian)
        result = grad(client, body)
        w, z = torch.tensor([1.0]), wire_to_torch(body["inputs"]["z"])
        leaf = w.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(value(leaf, z), [leaf])
        torch.testing.assert_close(wire_to_torch(result["grads"]["w"]), expected)
        if hessian:
            second = torch.autograd.functional.hessian(lambda w, z=z: value(w, z), w)
            torch.testing.assert_close(wire_to_torch(result["hessians"]["w"]["w"]), second)


def test_the_gradient_of_an_empty_input_of_many_rows_is_charged_its_lists(
    client: TestClient,
) -> None:
    rows = client.app.state.settings.limits.max_objects + 1  # type: ignore[attr-defined]
    body = {
        "expression": "sum(x)",
        "inputs": {"x": {"data": [], "shape": [rows, 0], "dtype": "float32"}},
    }
    response = client.post("/grad", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "objects_limit"


def test_a_backward_that_copies_its_input_is_charged_its_temporaries(
    client: TestClient,
) -> None:
    """prod's backward (as cumprod's, pow's, atan2's) makes several temporaries the size of
    its input: a [4096, 8192] one held 1.3 GB where 256 MB were charged."""
    x = torch.rand(1024, 1, generator=torch.Generator().manual_seed(0))
    y = torch.rand(1, 4096, generator=torch.Generator().manual_seed(1))
    inputs = {"x": x.tolist(), "y": y.tolist()}
    response = client.post(
        "/grad", json={"expression": "sum(prod(x * y, dim=0))", "inputs": inputs}
    )
    assert response.status_code == 413, response.text
    assert response.json()["details"]["limit"] == "max_total_elements"
    assert "temporaries" in response.json()["error"]
    plain = grad(client, {"expression": "sum(exp(x * y))", "inputs": inputs})
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.exp(leaf * y).sum(), leaf)
    torch.testing.assert_close(torch.tensor(plain["grads"]["x"]["data"]), expected)
