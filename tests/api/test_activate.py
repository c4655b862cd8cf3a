"""``GET /activate`` and ``POST /activate`` over HTTP: the tutorial's four functions, every
function's values and derivative against torch, PNG figures, errors and limits."""

from __future__ import annotations

import base64
import io
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.ops.nn.activations import ACTIVATIONS
from tests.api.test_system import assert_error
from tests.conftest import make_settings
from tests.unit.ops.nn.test_activations import PARAM_DRAWS, reference

MAX_POINTS = make_settings().limits.max_plot_points
"""The points limit of the session's app (the ``client`` fixture's settings)."""


def tensor(wire: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, wire["dtype"])
    return torch.tensor(np.asarray(wire["data"], dtype=np.float64), dtype=dtype).reshape(
        wire["shape"]
    )


def post(client: TestClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = client.post("/activate", json=body, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def png(client: TestClient, body: dict[str, Any]) -> tuple[Image.Image, Any]:
    response = client.post("/activate", json={**body, "format": "png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image, response.headers


# --- GET -------------------------------------------------------------------------------------


def test_get_lists_every_function_with_formula_params_and_range(client: TestClient) -> None:
    body = client.get("/activate").json()
    assert [f["name"] for f in body["functions"]] == [a.name for a in ACTIVATIONS]
    assert body["default_functions"] == ["sigmoid", "tanh", "relu", "softplus"]
    assert body["default_range"] == {"start": -6, "end": 6, "steps": 100, "dtype": "float32"}
    assert body["max_plot_points"] == MAX_POINTS
    by_name = {f["name"]: f for f in body["functions"]}
    leaky = by_name["leaky_relu"]
    assert leaky["nn_class"] == "LeakyReLU"
    assert leaky["params"] == [
        {
            "name": "negative_slope",
            "type": "a number",
            "default": 0.01,
            "required": False,
            "choices": None,
            "description": leaky["params"][0]["description"],
        }
    ]
    assert by_name["gelu"]["params"][0]["choices"] == ["none", "tanh"]
    assert [p["required"] for p in by_name["threshold"]["params"]] == [True, True]
    assert by_name["softmax"]["along_dim"] and "diagonal" in by_name["softmax"]["derivative"]
    assert by_name["sigmoid"]["output_range"] == "(0, 1)"
    for info in body["functions"]:
        assert info["formula"] and info["latex"] and info["output_range"]


# --- POST, JSON ------------------------------------------------------------------------------


def test_the_tutorials_four_over_its_linspace_by_default(client: TestClient) -> None:
    body = post(client, {})
    x = torch.linspace(-6, 6, 100)
    modules = [torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.ReLU(), torch.nn.Softplus()]
    assert [r["function"] for r in body["results"]] == ["sigmoid", "tanh", "relu", "softplus"]
    for result, module in zip(body["results"], modules, strict=True):
        assert torch.equal(tensor(result["x"]), x)
        assert torch.equal(tensor(result["y"]), module(x))
        assert result["dydx"] is None
    assert body["device"] in ("cpu", "cuda:0")
    assert body["elapsed_ms"] >= 0


@pytest.mark.parametrize("seed", [0, 1])
def test_every_function_and_derivative_matches_torch(client: TestClient, seed: int) -> None:
    rng = random.Random(seed)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    specs = [{"function": name, "params": draw(rng)} for name, (_, draw) in PARAM_DRAWS.items()]
    wire_x = {"data": x.tolist(), "dtype": "float64"}
    body = post(client, {"functions": specs, "x": wire_x, "derivative": True})
    assert len(body["results"]) == len(specs)
    for spec, result in zip(specs, body["results"], strict=True):
        assert result["function"] == spec["function"]
        y, diagonal, _ = reference(spec["function"], spec["params"], x)
        assert torch.equal(tensor(result["x"]), x)
        torch.testing.assert_close(tensor(result["y"]), y)
        torch.testing.assert_close(tensor(result["dydx"]), diagonal)
        for name, value in spec["params"].items():
            assert result["params"][name] == pytest.approx(value)


def test_nn_class_names_are_aliases_and_params_apply(client: TestClient) -> None:
    x = [-2.0, -1.0, 0.0, 1.0, 2.0]
    body = post(
        client,
        {"function": "LeakyReLU", "x": x, "params": {"negative_slope": 0.1}, "derivative": True},
    )
    (result,) = body["results"]
    assert result["function"] == "leaky_relu"
    assert result["params"] == {"negative_slope": 0.1}
    expected = torch.nn.LeakyReLU(0.1)(torch.tensor(x))
    assert torch.equal(tensor(result["y"]), expected)
    assert tensor(result["dydx"]).tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0, 1.0])


def test_softmax_along_dim_with_the_jacobian_diagonal(client: TestClient) -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    for body in ({"dim": 0}, {"params": {"dim": 0}}):
        result = post(client, {"function": "softmax", "x": x.tolist(), "derivative": True, **body})
        (entry,) = result["results"]
        s = torch.softmax(x, 0)
        torch.testing.assert_close(tensor(entry["y"]), s)
        torch.testing.assert_close(tensor(entry["dydx"]), s * (1 - s))
        assert entry["params"] == {"dim": 0}


def test_a_range_and_integer_inputs(client: TestClient) -> None:
    body = post(
        client,
        {"function": "tanh", "range": {"start": 0, "end": 1, "steps": 5, "dtype": "float64"}},
    )
    (result,) = body["results"]
    assert result["x"]["dtype"] == "float64"
    assert torch.equal(tensor(result["x"]), torch.linspace(0, 1, 5, dtype=torch.float64))
    body = post(client, {"function": "relu", "x": [3, -3]})
    assert body["results"][0]["x"] == {"shape": [2], "dtype": "float32", "data": [3.0, -3.0]}
    assert body["results"][0]["y"]["data"] == [3.0, 0.0]


def test_b64_encoding(client: TestClient) -> None:
    body = post(client, {"function": "sigmoid", "x": [0.0], "derivative": True}, encoding="b64")
    result = body["results"][0]
    for key in ("x", "y", "dydx"):
        assert set(result[key]) == {"shape", "dtype", "b64"}
    dydx = np.frombuffer(base64.b64decode(result["dydx"]["b64"]), "<f4")
    assert dydx.tolist() == [0.25]


# --- POST, PNG -------------------------------------------------------------------------------


def test_png_is_the_tutorials_figure(client: TestClient) -> None:
    image, headers = png(client, {})
    assert headers["X-Panel-Count"] == "4"
    assert headers["X-Panel-Layout"] == "1x4"
    assert image.format == "PNG"
    assert image.size == (1400, 300)  # the tutorial's figsize=(14, 3) at 100 dpi


def test_a_png_over_the_response_limit_is_413() -> None:
    with TestClient(create_app(make_settings(max_response_bytes=4096))) as small:
        response = small.post("/activate", json={"format": "png"})
    body = assert_error(response, 413, "response_bytes_limit")
    assert body["details"]["allowed"] == 4096 and body["details"]["requested"] > 4096


def test_png_with_derivatives_in_a_chosen_grid(client: TestClient) -> None:
    functions = [
        "gelu",
        {"function": "gelu", "params": {"approximate": "tanh"}},
        "elu",
        "silu",
        "mish",
    ]
    image, headers = png(client, {"functions": functions, "derivative": True, "columns": 2})
    assert headers["X-Panel-Count"] == "5"
    assert headers["X-Panel-Layout"] == "3x2"
    assert image.size == (2 * 350, 3 * 300)
    # The red curve (y) and the blue dashed one (dy/dx) are both drawn.
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    red = ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum()
    blue = ((pixels[:, 2] > 200) & (pixels[:, 0] < 60) & (pixels[:, 1] < 60)).sum()
    assert red > 500 and blue > 500


def test_png_of_a_multidimensional_input_and_non_finite_values(client: TestClient) -> None:
    x = [[1.0, "NaN"], ["Infinity", -2.0]]
    image, headers = png(client, {"function": "softplus", "x": x, "derivative": True})
    assert headers["X-Panel-Count"] == "1"
    assert image.size == (350, 300)


@pytest.mark.parametrize(
    "body",
    [
        {"function": "relu", "x": {"data": [1.7e308, -1.7e308], "dtype": "float64"}},
        {
            "function": "softplus",
            "x": {"data": [0.0, 1e200], "dtype": "float64"},
            "derivative": True,
        },
    ],
)
def test_a_png_of_values_no_axis_can_span_is_a_422(
    client: TestClient, body: dict[str, Any]
) -> None:
    """matplotlib's ticks over ±1.7e308 overflow: it failed, and the request was a 500."""
    response = client.post("/activate", json={**body, "format": "png"})
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["code"] == "values_too_large"
    assert payload["details"]["max_magnitude"] == 1e100
    as_json = client.post("/activate", json=body)  # the values themselves are fine
    assert as_json.status_code == 200
    large = {"function": "relu", "x": {"data": [1e99, -1e99], "dtype": "float64"}}
    png(client, large)  # within the bound: drawn


def test_a_range_beyond_float64_is_a_422(client: TestClient) -> None:
    """-1e400 reads as -inf: linspace from it gave NaN values."""
    body = b'{"function": "relu", "range": {"start": -1e400, "end": 1, "steps": 3}}'
    response = client.post("/activate", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    fine = client.post("/activate", json={"function": "relu", "range": {"start": -1e30, "end": 1}})
    assert fine.status_code == 200


def test_openapi_documents_png_and_its_headers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = schema["paths"]["/activate"]
    assert operations["get"]["operationId"] == "list_activations"
    post_op = operations["post"]
    assert post_op["operationId"] == "activate"
    ok = post_op["responses"]["200"]
    # Issue 11: `?encoding=binary` answers in the binary framing, its JSON's length in a header.
    assert set(ok["content"]) == {"application/json", "image/png", "application/octet-stream"}
    assert set(ok["headers"]) == {
        "X-Panel-Count",
        "X-Panel-Layout",
        "Inference-Header-Content-Length",
    }


# --- errors and limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"function": "swish"}, "unknown_function"),
        ({"functions": ["relu", "nope"]}, "unknown_function"),
        ({"function": "relu", "params": {"alpha": 1.0}}, "unknown_param"),
        ({"functions": [{"function": "elu", "params": {"beta": 1.0}}]}, "unknown_param"),
        ({"function": "relu", "dim": 0}, "unknown_param"),
        ({"function": "threshold", "params": {"value": 0.0}}, "missing_param"),
        ({"function": "gelu", "params": {"approximate": "fast"}}, "invalid_param"),
        ({"function": "elu", "params": {"alpha": [1.0]}}, "invalid_param"),
        ({"function": "celu", "params": {"alpha": 0}}, "op_failed"),
        ({"function": "softmax", "x": [1.0, 2.0], "dim": 1}, "op_failed"),
        ({"function": "prelu", "params": {"weight": [0.1, 0.2]}}, "op_failed"),
        ({"function": "relu", "range": {"start": 1e39, "end": 1e40}}, "op_failed"),
        ({"function": "relu", "x": [[1.0], [2.0, 3.0]]}, "ragged_tensor"),
        ({"function": "relu", "functions": ["tanh"]}, "validation_error"),
        ({"function": "relu", "x": [1.0], "range": {}}, "validation_error"),
        ({"function": "softmax", "dim": 0, "params": {"dim": 0}}, "validation_error"),
        ({"functions": []}, "validation_error"),
        ({"functions": ["relu"] * 33}, "validation_error"),
        ({"function": "relu", "format": "svg"}, "validation_error"),
        ({"function": "relu", "range": {"steps": 0}}, "validation_error"),
        ({"function": "relu", "extra": 1}, "validation_error"),
        ({"function": "relu", "derivative": 1}, "validation_error"),
        ({"function": "relu", "device": "cuda:9"}, "device_unavailable"),
    ],
)
def test_bad_requests_are_422(client: TestClient, body: dict[str, Any], code: str) -> None:
    error = assert_error(client.post("/activate", json=body), 422, code)
    if code == "unknown_function":
        assert "leaky_relu" in error["details"]["allowed"]
    if code == "unknown_param":
        assert "allowed" in error["details"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"range": {"steps": (1 << 22) + 1}}, "elements_limit"),
        ({"x": {"data": [0.0], "shape": [1 << 23]}}, "elements_limit"),
        ({"range": {"steps": 1 << 22}, "derivative": True}, "total_elements_limit"),
        ({"function": "softmax", "range": {"steps": 30000}, "derivative": True}, "flops_limit"),
        (
            {"functions": ["relu"] * 4, "range": {"steps": MAX_POINTS // 4 + 1}, "format": "png"},
            "plot_points_limit",
        ),
    ],
)
def test_limits_are_413(client: TestClient, body: dict[str, Any], code: str) -> None:
    error = assert_error(client.post("/activate", json=body), 413, code)
    assert error["details"]["requested"] > error["details"]["allowed"]


def test_the_configured_points_limit_is_listed_and_enforced() -> None:
    limit = 1000
    with TestClient(create_app(make_settings(max_plot_points=limit))) as small:
        assert small.get("/activate").json()["max_plot_points"] == limit
        fits = {"functions": ["relu"] * 4, "range": {"steps": limit // 4}, "format": "png"}
        assert small.post("/activate", json=fits).status_code == 200
        over = {**fits, "range": {"steps": limit // 4 + 1}}
        error = assert_error(small.post("/activate", json=over), 413, "plot_points_limit")
        assert error["details"] == {
            "limit": "max_plot_points",
            "allowed": limit,
            "requested": 4 * (limit // 4 + 1),
        }


def test_small_limits_refuse_before_computing() -> None:
    app = create_app(make_settings(max_elements=64, max_total_elements=256))
    with TestClient(app) as small:
        assert_error(small.post("/activate", json={}), 413, "elements_limit")
        body = {"functions": ["relu"] * 5, "range": {"steps": 64}}
        assert_error(small.post("/activate", json=body), 413, "total_elements_limit")
        assert small.post("/activate", json={"range": {"steps": 50}}).status_code == 200


def test_a_big_body_is_decoded_and_admitted_off_the_event_loop() -> None:
    x = torch.linspace(-3, 3, 5000)  # about 50 KB of JSON: decoded in the compute thread
    app = create_app(make_settings(max_total_elements=16000))
    with TestClient(app) as small:
        body = post(small, {"function": "hardswish", "x": x.tolist(), "derivative": True})
        torch.testing.assert_close(tensor(body["results"][0]["y"]), torch.nn.Hardswish()(x))
        response = small.post(
            "/activate", json={"functions": ["relu", "tanh", "elu"], "x": x.tolist()}
        )
        assert_error(response, 413, "total_elements_limit")


@pytest.mark.gpu
def test_cuda_agrees_with_the_cpu(client: TestClient) -> None:
    specs = [
        {"function": name, "params": draw(random.Random(3))}
        for name, (_, draw) in PARAM_DRAWS.items()
    ]
    x = (torch.randn(6, 5, generator=torch.Generator().manual_seed(3)) * 3).tolist()
    body = {"functions": specs, "x": x, "derivative": True}
    cpu = post(client, {**body, "device": "cpu"})
    gpu = post(client, {**body, "device": "cuda"})
    assert gpu["device"] == "cuda:0"
    for on_cpu, on_gpu in zip(cpu["results"], gpu["results"], strict=True):
        for key in ("y", "dydx"):
            torch.testing.assert_close(
                tensor(on_gpu[key]), tensor(on_cpu[key]), rtol=1e-4, atol=1e-5
            )
    image, headers = png(client, {"device": "cuda", "derivative": True})
    assert headers["X-Panel-Layout"] == "1x4" and image.size == (1400, 300)


# --- the work charged: derivatives and figures --------------------------------------------------


@pytest.fixture(scope="module")
def calibrated() -> Iterator[TestClient]:
    """Fixed device rates and the default time limit, with room for the FLOPs."""
    rates = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}
    settings = make_settings(
        device="cpu",
        calibration=rates,
        request_timeout_s=30.0,
        max_flops=2e12,
        isolate=False,  # every refusal here is the plan's, made before any worker is used
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as app:
        yield app


def refused_fast(client: TestClient, body: dict[str, Any], code: str) -> dict[str, Any]:
    client.post("/activate", json=body)  # once untimed: a new app's first request imports
    start = time.perf_counter()
    error = assert_error(client.post("/activate", json=body), 413, code)
    assert time.perf_counter() - start < 1.0
    assert client.get("/health").status_code == 200
    return error


def test_a_softmax_derivative_along_a_long_dim_is_refused_in_time(calibrated: TestClient) -> None:
    """100k positions along dim: 100k backward passes over 100k elements (a minute or more),
    once admitted by the FLOP estimate alone."""
    body = {"function": "softmax", "range": {"steps": 100_000}, "derivative": True}
    error = refused_fast(calibrated, body, "over_time_budget")
    assert error["details"]["limit"] == "request_timeout_s"
    small = post(calibrated, {**body, "range": {"steps": 1000}})
    assert len(small["results"][0]["dydx"]["data"]) == 1000


def test_every_panel_of_a_figure_is_charged() -> None:
    """32 panels take matplotlib about 5 s: over a limit of 4 s, four panels are not."""
    rates = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}
    settings = make_settings(device="cpu", calibration=rates, request_timeout_s=4.0, isolate=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"functions": ["relu"] * 32, "range": {"steps": 10}, "format": "png"}
        error = refused_fast(client, body, "over_time_budget")
        assert error["details"]["limit"] == "request_timeout_s"
        response = client.post("/activate", json={**body, "functions": ["relu"] * 4})
        assert response.status_code == 200
        assert response.headers["X-Panel-Count"] == "4"


def test_a_figure_over_the_pixel_limit_is_413() -> None:
    settings = make_settings(device="cpu", max_png_pixels=350 * 300 * 4, isolate=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"functions": ["relu"] * 5, "range": {"steps": 10}, "format": "png"}
        error = refused_fast(client, {**body, "columns": 1}, "png_pixels_limit")
        assert error["details"]["limit"] == "max_png_pixels"
        assert error["details"]["requested"] == 350 * 300 * 5
        four = {**body, "functions": ["relu"] * 4}
        assert client.post("/activate", json=four).status_code == 200
