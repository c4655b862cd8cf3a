"""POST /layers/linear and POST /layers/rnn against torch.nn modules built in the test."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from schemas.layers import LINEAR_EXAMPLE, RNN_EXAMPLE
from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings

MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.fixture
def isolated_rng() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        yield


def tensor(body: dict[str, Any]) -> torch.Tensor:
    if "b64" in body:
        array = np.frombuffer(base64.b64decode(body["b64"]), dtype=np.dtype(body["dtype"]))
        return torch.from_numpy(array.copy()).reshape(body["shape"])
    return torch.tensor(body["data"], dtype=getattr(torch, body["dtype"])).reshape(body["shape"])


def post(client: TestClient, path: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = client.post(path, json=body, params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- Linear --------------------------------------------------------------------------------


def test_linear_seeded_is_torch_manual_seed_then_nn_linear(
    client: TestClient, isolated_rng: None
) -> None:
    x = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]
    body = post(
        client,
        "/layers/linear",
        {"in_features": 4, "out_features": 3, "input": x, "seed": 123, "device": "cpu"},
    )
    torch.manual_seed(123)
    reference = nn.Linear(4, 3)
    assert torch.equal(tensor(body["weight"]), reference.weight)
    assert torch.equal(tensor(body["bias"]), reference.bias)
    with torch.no_grad():
        expected = reference(torch.tensor(x))
    torch.testing.assert_close(tensor(body["output"]), expected)
    assert body["device"] == "cpu" and body["elapsed_ms"] >= 0


def test_linear_given_weights_are_used_exactly(client: TestClient) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    x = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    body = post(
        client,
        "/layers/linear",
        {
            "in_features": 3,
            "out_features": 5,
            "input": x.tolist(),
            "weight": {"data": weight.flatten().tolist(), "shape": [5, 3], "dtype": "float64"},
            "bias_values": {"data": bias.tolist(), "dtype": "float64"},
        },
        encoding="b64",
    )
    # The input is float32 (inferred from the lists), so the layer computes in float32.
    reference = nn.Linear(3, 5)
    with torch.no_grad():
        reference.weight.copy_(weight)
        reference.bias.copy_(bias)
        expected = reference(x.float())
    assert body["output"]["dtype"] == "float32" and body["output"]["shape"] == [2, 4, 5]
    assert torch.equal(tensor(body["output"]), expected)
    assert torch.equal(tensor(body["weight"]), weight.float())


def test_linear_float64_input_and_no_bias(client: TestClient) -> None:
    x = {"data": [1.0, 2.0], "shape": [1, 2], "dtype": "float64"}
    body = post(
        client,
        "/layers/linear",
        {"in_features": 2, "out_features": 1, "bias": False, "input": x, "weight": [[0.5, 0.25]]},
    )
    assert body["bias"] is None
    assert body["output"] == {"shape": [1, 1], "dtype": "float64", "data": [[1.0]]}
    assert body["weight"]["dtype"] == "float64"


def test_linear_without_seed_is_random(client: TestClient) -> None:
    request = {"in_features": 8, "out_features": 8, "input": [[0.0] * 8]}
    first = post(client, "/layers/linear", request)["weight"]["data"]
    second = post(client, "/layers/linear", request)["weight"]["data"]
    assert first != second


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"in_features": 13, "input": [[1.0] * 12]}, "input has 12 features, the layer expects 13"),
        ({"weight": [[1.0, 2.0, 3.0]]}, "weight has shape [1, 3]"),
        ({"bias_values": [1.0, 2.0, 3.0]}, "bias_values has shape [3]"),
        ({"input": 1.0}, "0-d"),
    ],
)
def test_linear_shape_errors_are_422(
    client: TestClient, extra: dict[str, Any], message: str
) -> None:
    request = {**LINEAR_EXAMPLE, **extra}
    body = assert_error(client.post("/layers/linear", json=request), 422, "shape_mismatch")
    assert message in body["error"]


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        ({"in_features": 0}, 422, "validation_error"),
        ({"out_features": True}, 422, "validation_error"),
        ({"units": 3}, 422, "validation_error"),
        ({"bias": False, "bias_values": [1.0, 2.0]}, 422, "unexpected_argument"),
        ({"input": [[1, 2], [3]]}, 422, "ragged_tensor"),
        ({"device": "cuda:7"}, 422, "device_unavailable"),
        ({"in_features": 1, "out_features": 1 << 26, "input": [[1.0]]}, 413, "elements_limit"),
    ],
)
def test_linear_bad_requests(
    client: TestClient, extra: dict[str, Any], status: int, code: str
) -> None:
    assert_error(client.post("/layers/linear", json={**LINEAR_EXAMPLE, **extra}), status, code)


def test_linear_flop_limit() -> None:
    app = create_app(make_settings(max_flops=1e6))
    x = {"b64": base64.b64encode(bytes(4 * 100 * 100)).decode(), "shape": [100, 100]}
    request = {"in_features": 100, "out_features": 100, "input": {**x, "dtype": "float32"}}
    with TestClient(app) as client:
        body = assert_error(client.post("/layers/linear", json=request), 413, "flops_limit")
    # 2·N·in·out = 2·100·100·100.
    assert body["details"] == {"limit": "max_flops", "allowed": 1e6, "requested": 2e6}


# --- RNN, LSTM, GRU ------------------------------------------------------------------------


def torch_module(request: dict[str, Any]) -> nn.RNNBase:
    kwargs = {
        key: request[key]
        for key in ("num_layers", "bias", "batch_first", "bidirectional")
        if key in request
    }
    if "nonlinearity" in request:
        kwargs["nonlinearity"] = request["nonlinearity"]
    return MODULES[request["mode"]](request["input_size"], request["hidden_size"], **kwargs)


RNN_CASES = [
    {"mode": "rnn"},
    {"mode": "rnn", "nonlinearity": "relu", "num_layers": 2},
    {"mode": "lstm", "num_layers": 2, "bidirectional": True},
    {"mode": "lstm", "batch_first": True, "bias": False},
    {"mode": "gru", "num_layers": 3, "batch_first": True, "bidirectional": True},
    {"mode": "gru", "unbatched": True},
]


@pytest.mark.parametrize("case", RNN_CASES, ids=lambda case: "-".join(map(str, case.values())))
@pytest.mark.parametrize("with_state", [False, True])
def test_rnn_matches_torch_with_the_same_weights(
    client: TestClient, case: dict[str, Any], with_state: bool
) -> None:
    case = dict(case)
    unbatched = case.pop("unbatched", False)
    request: dict[str, Any] = {"input_size": 3, "hidden_size": 4, **case}
    reference = torch_module(request)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    seq, batch = 6, 2
    shape = (
        (seq, 3) if unbatched else (batch, seq, 3) if case.get("batch_first") else (seq, batch, 3)
    )
    x = torch.randn(shape, generator=generator)
    layers = request.get("num_layers", 1) * (2 if case.get("bidirectional") else 1)
    state_shape = (layers, 4) if unbatched else (layers, batch, 4)
    h0 = torch.randn(state_shape, generator=generator)
    c0 = torch.randn(state_shape, generator=generator)
    request["input"] = x.tolist()
    request["weights"] = {name: p.tolist() for name, p in reference.named_parameters()}
    if with_state:
        request["h0"] = h0.tolist()
        if case["mode"] == "lstm":
            request["c0"] = c0.tolist()
    body = post(client, "/layers/rnn", {**request, "device": "cpu"})

    hx: Any = None
    if with_state:
        hx = (h0, c0) if case["mode"] == "lstm" else h0
    with torch.no_grad():
        output, final = reference(x, hx)
    h_n, c_n = final if case["mode"] == "lstm" else (final, None)
    torch.testing.assert_close(tensor(body["output"]), output)
    torch.testing.assert_close(tensor(body["h_n"]), h_n)
    if c_n is None:
        assert body["c_n"] is None
    else:
        torch.testing.assert_close(tensor(body["c_n"]), c_n)
    assert body["parameters"] == {name: list(p.shape) for name, p in reference.named_parameters()}
    for name, p in reference.named_parameters():
        assert torch.equal(tensor(body["weights"][name]), p.detach())


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_rnn_seeded_is_torch_manual_seed_then_the_module(
    client: TestClient, isolated_rng: None, mode: str
) -> None:
    request = {**RNN_EXAMPLE, "mode": mode, "bidirectional": True, "device": "cpu", "seed": 77}
    body = post(client, "/layers/rnn", request, encoding="b64")
    torch.manual_seed(77)
    reference = torch_module(request)
    for name, p in reference.named_parameters():
        assert torch.equal(tensor(body["weights"][name]), p.detach()), name
    with torch.no_grad():
        output, _ = reference(torch.tensor(RNN_EXAMPLE["input"]))
    torch.testing.assert_close(tensor(body["output"]), output)


def test_rnn_return_weights_false(client: TestClient) -> None:
    body = post(client, "/layers/rnn", {**RNN_EXAMPLE, "return_weights": False})
    assert body["weights"] is None
    assert body["parameters"]["weight_ih_l0"] == [12, 4]
    assert body["parameters"]["weight_ih_l1"] == [12, 3]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ({"input_size": 13}, "shape_mismatch", "input has 4 features, the layer expects 13"),
        (
            {"hidden_size": 20, "bidirectional": True, "h0": np.zeros((1, 1, 20)).tolist()},
            "shape_mismatch",
            "h0 has shape [1, 1, 20], an LSTM with num_layers=2, bidirectional and "
            "hidden_size=20 expects [4, 1, 20]",
        ),
        ({"input": [[[[1.0] * 4]]]}, "shape_mismatch", "input has 4 dimensions"),
        ({"weights": {"weight_ih_l0": [[1.0]]}}, "shape_mismatch", "weights.weight_ih_l0"),
        ({"weights": {"weight_ih_l5": [[1.0]]}}, "unknown_param", "weight_ih_l5"),
        ({"mode": "gru", "c0": np.zeros((2, 1, 3)).tolist()}, "unexpected_argument", "c0"),
        ({"nonlinearity": "relu"}, "unexpected_argument", "nonlinearity"),
    ],
)
def test_rnn_errors_are_422(
    client: TestClient, extra: dict[str, Any], code: str, message: str
) -> None:
    body = assert_error(client.post("/layers/rnn", json={**RNN_EXAMPLE, **extra}), 422, code)
    assert message in body["error"]


@pytest.mark.parametrize(
    "extra",
    [
        {"mode": "transformer"},
        {"num_layers": 0},
        {"num_layers": 65},
        {"weights": {"not_a_parameter": [1.0]}},
        {"nonlinearity": "sigmoid"},
    ],
)
def test_rnn_schema_invalid_is_422(client: TestClient, extra: dict[str, Any]) -> None:
    assert_error(client.post("/layers/rnn", json={**RNN_EXAMPLE, **extra}), 422, "validation_error")


def test_rnn_limits_are_413() -> None:
    app = create_app(make_settings(max_elements=1 << 16, max_flops=1e7))
    with TestClient(app) as client:
        big = {**RNN_EXAMPLE, "hidden_size": 1024, "num_layers": 1}
        assert_error(client.post("/layers/rnn", json=big), 413, "elements_limit")
        long_input = {
            "b64": base64.b64encode(bytes(4 * 400 * 4)).decode(),
            "shape": [400, 1, 4],
            "dtype": "float32",
        }
        slow = {**RNN_EXAMPLE, "hidden_size": 32, "input": long_input}
        body = assert_error(client.post("/layers/rnn", json=slow), 413, "flops_limit")
    assert body["details"]["limit"] == "max_flops"


def test_operation_ids(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/layers/linear"]["post"]["operationId"] == "linear_layer"
    assert paths["/layers/rnn"]["post"]["operationId"] == "rnn_layer"


@pytest.mark.gpu
def test_layers_on_cuda_match_the_cpu(client: TestClient) -> None:
    linear = {**LINEAR_EXAMPLE, "seed": 3}
    cpu = post(client, "/layers/linear", {**linear, "device": "cpu"})
    gpu = post(client, "/layers/linear", {**linear, "device": "cuda"})
    assert gpu["device"] == "cuda:0"
    assert gpu["weight"] == cpu["weight"]  # initialised on the CPU, then moved
    torch.testing.assert_close(tensor(gpu["output"]), tensor(cpu["output"]))
    for mode in ("rnn", "lstm", "gru"):
        request = {**RNN_EXAMPLE, "mode": mode, "bidirectional": True, "seed": 3}
        cpu = post(client, "/layers/rnn", {**request, "device": "cpu"})
        gpu = post(client, "/layers/rnn", {**request, "device": "cuda"})
        assert gpu["weights"] == cpu["weights"]
        for key in ("output", "h_n", "c_n"):
            if cpu[key] is not None:
                torch.testing.assert_close(tensor(gpu[key]), tensor(cpu[key]), rtol=1e-4, atol=1e-5)


# --- recurrent steps charged one after another --------------------------------------------------


def test_a_long_sequence_of_tiny_steps_is_refused_in_time() -> None:
    """100k steps × 16 layers × 2 directions of a hidden size of 1: next to no FLOPs, but 3.2M
    rounds of kernel calls one after another (a minute or more on a CPU)."""
    rates = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}
    settings = make_settings(device="cpu", calibration=rates, request_timeout_s=30.0, isolate=False)
    long_input = {
        "b64": base64.b64encode(bytes(4 * 100_000)).decode(),
        "shape": [100_000, 1, 1],
        "dtype": "float32",
    }
    body = {
        "mode": "gru",
        "input_size": 1,
        "hidden_size": 1,
        "num_layers": 16,
        "bidirectional": True,
        "input": long_input,
        "return_weights": False,
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as app:
        start = time.perf_counter()
        error = assert_error(app.post("/layers/rnn", json=body), 413, "over_time_budget")
        assert time.perf_counter() - start < 1.0
        assert error["details"]["limit"] == "request_timeout_s"
        short = {**body, "input": [[[0.5]]] * 100}
        assert post(app, "/layers/rnn", short)["output"]["shape"] == [100, 1, 2]
