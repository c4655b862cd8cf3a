"""The Open Inference Protocol (V2) endpoints: in-process through httpx, and with Triton's
own client (``tritonclient.http``) against a live uvicorn, JSON and binary. Expected values
come from torch."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from fastapi.testclient import TestClient

from schemas.common import MAX_TENSORS
from service.api.bodies import many_values
from service.main import create_app
from service.ops.v2.models import MODELS
from tests.conftest import TEST_CALIBRATION, make_settings
from tests.reliability.conftest import Server, start_server, stop_server

httpclient = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")

FRAME = "Inference-Header-Content-Length"


def infer_json(name: str, inputs: dict[str, np.ndarray], **parameters: Any) -> dict[str, Any]:
    """A JSON inference request of numpy arrays (FP32 unless they say otherwise)."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": key,
                "shape": list(value.shape),
                "datatype": triton_utils.np_to_triton_dtype(value.dtype),
                "data": value.reshape(-1).tolist(),
            }
            for key, value in inputs.items()
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def output_of(response: Any) -> np.ndarray:
    """The ``output`` of a JSON or binary inference response, read with numpy."""
    assert response.status_code == 200, response.text
    length = response.headers.get(FRAME)
    if length is None:
        (output,) = response.json()["outputs"]
        dtype = triton_utils.triton_to_np_dtype(output["datatype"])
        return np.array(output["data"], dtype=dtype).reshape(output["shape"])
    head = orjson.loads(response.content[: int(length)])
    (output,) = head["outputs"]
    dtype = triton_utils.triton_to_np_dtype(output["datatype"])
    data = response.content[int(length) :]
    assert len(data) == output["parameters"]["binary_data_size"]
    return np.frombuffer(data, dtype=dtype).reshape(output["shape"])


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
M = RNG.standard_normal((5, 6)).astype(np.float32)
L = RNG.standard_normal((3, 6)).astype(np.float32)
t = torch.from_numpy

CASES: list[tuple[str, dict[str, np.ndarray], dict[str, Any], np.ndarray]] = [
    ("relu", {"input": M}, {}, F.relu(t(M)).numpy()),
    ("leaky_relu", {"input": M}, {"negative_slope": 0.2}, F.leaky_relu(t(M), 0.2).numpy()),
    ("softmax", {"input": M}, {"dim": 0}, F.softmax(t(M), 0).numpy()),
    ("sigmoid", {"input": X}, {}, torch.sigmoid(t(X)).numpy()),
    ("matmul", {"input": M, "other": L.T.copy()}, {}, (t(M) @ t(L).T).numpy()),
    ("linear", {"input": M, "weight": L}, {}, F.linear(t(M), t(L)).numpy()),
    (
        "linear",
        {"input": M, "weight": L, "bias": B[:3].copy()},
        {},
        F.linear(t(M), t(L), t(B[:3])).numpy(),
    ),
    (
        "conv2d",
        {"input": X, "weight": W, "bias": B},
        {"stride": 1, "padding": 1},
        F.conv2d(t(X), t(W), t(B), padding=1).numpy(),
    ),
    (
        "conv2d",
        {"input": X[0].copy(), "weight": W},
        {"padding": "same", "dilation": [1, 2]},
        F.conv2d(t(X[0]), t(W), padding="same", dilation=(1, 2)).numpy(),
    ),
    (
        "max_pool2d",
        {"input": X},
        {"kernel_size": 2},
        F.max_pool2d(t(X), 2).numpy(),
    ),
    (
        "avg_pool2d",
        {"input": X},
        {"kernel_size": [3, 2], "stride": 1, "padding": 1},
        F.avg_pool2d(t(X), (3, 2), 1, 1).numpy(),
    ),
]
CASE_IDS = [f"{name}-{index}" for index, (name, *_) in enumerate(CASES)]


# --- in process ---------------------------------------------------------------------------


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "torchlab"
    assert meta["extensions"] == ["binary_tensor_data", "model_configuration", "statistics"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_health_probes_need_no_key_but_the_rest_does() -> None:
    # Orchestrators (KServe, Kubernetes probes) call the protocol's health routes without a key.
    with TestClient(create_app(make_settings(api_keys=["k-secret"]))) as keyed:
        assert keyed.get("/v2/health/live").json() == {"live": True}
        assert keyed.get("/v2/health/ready").json() == {"ready": True}
        for path in ("/v2", "/v2/models", "/v2/models/relu", "/v2/models/relu/ready"):
            response = keyed.get(path)
            assert response.status_code == 401, path
            assert response.json()["code"] == "unauthorized"
        assert keyed.get("/v2/models/relu", headers={"X-API-Key": "k-secret"}).status_code == 200
        body = infer_json("relu", {"input": M})
        assert keyed.post("/v2/models/relu/infer", json=body).status_code == 401
        schema = keyed.get("/openapi.json").json()["paths"]
        assert "security" not in schema["/v2/health/live"]["get"]
        assert "security" in schema["/v2/models/{name}/infer"]["post"]


def test_every_activation_is_a_model(client: TestClient) -> None:
    activations = [f["name"] for f in client.get("/activate").json()["functions"]]
    models = {m["name"]: m for m in client.get("/v2/models").json()["models"]}
    assert set(activations) <= set(models)
    assert {"matmul", "linear", "conv2d", "max_pool2d", "avg_pool2d"} <= set(models)
    for name in activations:
        assert [i["name"] for i in models[name]["inputs"]] == ["input"]
        assert [o["name"] for o in models[name]["outputs"]] == ["output"]
        assert client.get(f"/v2/models/{name}/ready").status_code == 200


def test_model_metadata(client: TestClient) -> None:
    meta = client.get("/v2/models/conv2d").json()
    assert meta["versions"] == ["1"]
    assert [(i["name"], i["shape"], i["optional"]) for i in meta["inputs"]] == [
        ("input", [-1, -1, -1, -1], False),
        ("weight", [-1, -1, -1, -1], False),
        ("bias", [-1], True),
    ]
    assert {p["name"] for p in meta["parameters"]} == {"stride", "padding", "dilation", "groups"}
    assert client.get("/v2/models/conv2d/versions/1").json() == meta
    leaky = client.get("/v2/models/leaky_relu").json()
    assert leaky["parameters"][0]["name"] == "negative_slope"
    assert leaky["parameters"][0]["default"] == 0.01


def test_every_models_config_says_what_its_metadata_says(client: TestClient) -> None:
    for name in MODELS:
        meta = client.get(f"/v2/models/{name}").json()
        config = client.get(f"/v2/models/{name}/config").json()
        assert client.get(f"/v2/models/{name}/versions/1/config").json() == config
        assert config["name"] == name
        assert config["max_batch_size"] == 0  # the dims are whole shapes
        assert config["version_policy"] == {"latest": {"num_versions": 1}}
        assert [(i["name"], i["dims"], i["optional"]) for i in config["input"]] == [
            (i["name"], i["shape"], i["optional"]) for i in meta["inputs"]
        ]
        assert [(o["name"], o["dims"]) for o in config["output"]] == [
            (o["name"], o["shape"]) for o in meta["outputs"]
        ]
        for tensor in (*config["input"], *config["output"]):
            assert tensor["data_type"] == "TYPE_FP32"
            assert tensor["is_shape_tensor"] is False


def _stats(client: TestClient, name: str) -> dict[str, Any]:
    (entry,) = client.get(f"/v2/models/{name}/stats").json()["model_stats"]
    assert entry["name"] == name
    assert entry["version"] == "1"
    return dict(entry)


def _spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(count, ns) added to each stage between two statistics of a model."""
    return {
        stage: (
            after["inference_stats"][stage]["count"] - before["inference_stats"][stage]["count"],
            after["inference_stats"][stage]["ns"] - before["inference_stats"][stage]["ns"],
        )
        for stage in after["inference_stats"]
    }


def test_statistics_count_each_request_and_split_its_time(client: TestClient) -> None:
    small = infer_json("tanh", {"input": M})  # tiny: runs on the event loop
    rng = np.random.default_rng(3)
    large = infer_json("tanh", {"input": rng.standard_normal((300, 300)).astype(np.float32)})
    bad = infer_json("tanh", {"x": M})  # a 422 once the model is found
    before = _stats(client, "tanh")
    wall_start, epoch_start = time.perf_counter_ns(), time.time_ns() // 1_000_000
    answers = [client.post("/v2/models/tanh/infer", json=body) for body in (small, large, small)]
    refused = [client.post("/v2/models/tanh/infer", json=bad) for _ in range(2)]
    wall, epoch_end = time.perf_counter_ns() - wall_start, time.time_ns() // 1_000_000
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [r.status_code for r in refused] == [422, 422]
    assert client.post("/v2/models/nope/infer", json=small).status_code == 404  # no model: none
    after = _stats(client, "tanh")

    spent = _spent(before, after)
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 3
    assert epoch_start <= after["last_inference"] <= epoch_end
    for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert spent[stage][0] == 3, stage
    assert spent["fail"][0] == 2
    assert spent["cache_hit"] == spent["cache_miss"] == (0, 0)
    parts = ("compute_input", "queue", "compute_infer", "compute_output")
    assert sum(spent[stage][1] for stage in parts) == spent["success"][1]  # they add up
    assert 0 < spent["success"][1] + spent["fail"][1] < wall
    # compute_infer is the compute time each answer reported as elapsed_ms.
    reported = sum(a.json()["parameters"]["elapsed_ms"] for a in answers) * 1e6
    assert spent["compute_infer"][1] == pytest.approx(reported, abs=10)
    assert spent["compute_infer"][1] > 0


def test_all_statistics_list_every_model_in_order(client: TestClient) -> None:
    client.post("/v2/models/relu6/infer", json=infer_json("relu6", {"input": M}))
    every = client.get("/v2/models/stats").json()["model_stats"]
    assert [entry["name"] for entry in every] == list(MODELS)
    by_name = {entry["name"]: entry for entry in every}
    assert by_name["relu6"] == _stats(client, "relu6")
    assert by_name["relu6"]["inference_count"] >= 1
    assert client.get("/v2/models/relu6/versions/1/stats").json()["model_stats"] == [
        by_name["relu6"]
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/config",
        "/v2/models/nope/stats",
        "/v2/models/relu/versions/2",
        "/v2/models/relu/versions/2/ready",
        "/v2/models/relu/versions/2/config",
        "/v2/models/relu/versions/2/stats",
    ],
)
def test_unknown_models_and_versions_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(("name", "inputs", "parameters", "expected"), CASES, ids=CASE_IDS)
def test_infer_json(
    client: TestClient,
    name: str,
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any],
    expected: np.ndarray,
) -> None:
    response = client.post(f"/v2/models/{name}/infer", json=infer_json(name, inputs, **parameters))
    np.testing.assert_allclose(output_of(response), expected, rtol=1e-5, atol=1e-5)
    assert response.json()["model_name"] == name
    assert response.json()["parameters"]["device"] == "cpu"


@pytest.mark.parametrize(("name", "inputs", "parameters", "expected"), CASES, ids=CASE_IDS)
def test_infer_binary_both_ways(
    client: TestClient,
    name: str,
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any],
    expected: np.ndarray,
) -> None:
    body = infer_json(name, inputs, **parameters, binary_data_output=True)
    for entry in body["inputs"]:
        del entry["data"]
        entry["parameters"] = {"binary_data_size": inputs[entry["name"]].nbytes}
    head = json.dumps(body).encode()
    content = head + b"".join(value.tobytes() for value in inputs.values())
    response = client.post(
        f"/v2/models/{name}/versions/1/infer", content=content, headers={FRAME: str(len(head))}
    )
    np.testing.assert_allclose(output_of(response), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["FP16", "BF16", "FP64", "INT64"])
def test_dtypes_are_kept(client: TestClient, dtype: str) -> None:
    x = torch.tensor([[-1.5, 2.0], [3.0, -4.0]]).to(
        {
            "FP16": torch.float16,
            "BF16": torch.bfloat16,
            "FP64": torch.float64,
            "INT64": torch.int64,
        }[dtype]
    )
    raw = x.view(torch.int16).numpy().tobytes() if dtype == "BF16" else x.numpy().tobytes()
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, 2],
                "datatype": dtype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(body).encode()
    response = client.post(
        "/v2/models/relu/infer", content=head + raw, headers={FRAME: str(len(head))}
    )
    length = int(response.headers[FRAME])
    output = orjson.loads(response.content[:length])["outputs"][0]
    assert output["datatype"] == ("FP32" if dtype == "INT64" else dtype)  # ints become float32


def test_output_may_be_asked_for_as_json(client: TestClient) -> None:
    body = infer_json("relu", {"input": M})
    body["outputs"] = [{"name": "output", "parameters": {"binary_data": False}}]
    body["parameters"] = {"binary_data_output": True}
    response = client.post("/v2/models/relu/infer", json=body)
    assert FRAME not in response.headers
    np.testing.assert_allclose(output_of(response), F.relu(t(M)).numpy())


def _bad(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    copied = json.loads(json.dumps(body))
    for path, value in changes.items():
        target = copied
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return copied


GOOD = infer_json("linear", {"input": M, "weight": L})
BAD_REQUESTS = [
    ("unknown input", _bad(GOOD, inputs__1__name="w"), 422, "unknown_name"),
    ("missing input", {"inputs": GOOD["inputs"][:1]}, 422, "missing_input"),
    (
        "input twice",
        {"inputs": [GOOD["inputs"][0]] * 2 + GOOD["inputs"][1:]},
        422,
        "duplicate_field",
    ),
    ("BYTES", _bad(GOOD, inputs__0__datatype="BYTES"), 400, "unsupported_datatype"),
    ("unknown dtype", _bad(GOOD, inputs__0__datatype="FP8"), 422, "invalid_dtype"),
    ("shape against data", _bad(GOOD, inputs__0__shape=[4, 6]), 422, "shape_mismatch"),
    ("no data", _bad(GOOD, inputs__0__data=None), 422, "invalid_tensor"),
    ("unknown parameter", {**GOOD, "parameters": {"alpha": 1}}, 422, "unknown_param"),
    ("bad device", {**GOOD, "parameters": {"device": "tpu"}}, 422, "invalid_param"),
    ("absent device", {**GOOD, "parameters": {"device": "cuda:7"}}, 422, "device_unavailable"),
    ("binary flag", {**GOOD, "parameters": {"binary_data_output": "yes"}}, 422, "invalid_param"),
    ("unknown output", {**GOOD, "outputs": [{"name": "y"}]}, 422, "unknown_name"),
    ("unknown field", {**GOOD, "model": "linear"}, 422, "validation_error"),
    ("shapes torch refuses", _bad(GOOD, inputs__1__shape=[6, 3]), 422, "op_failed"),
    ("over the element limit", _bad(GOOD, inputs__0__shape=[1 << 22, 6]), 413, "elements_limit"),
    (
        "one input too many",
        {"inputs": [GOOD["inputs"][0]] * (MAX_TENSORS + 1)},
        422,
        "validation_error",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_requests(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    response = client.post("/v2/models/linear/infer", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert isinstance(response.json()["error"], str)  # the protocol's error body


BIG = RNG.standard_normal((15_000, 6)).astype(np.float32)  # 1.7 MB as JSON
BIG_GOOD = infer_json("linear", {"input": BIG, "weight": L})
LARGE_CASES = {
    "BYTES": _bad(BIG_GOOD, inputs__0__datatype="BYTES"),
    "input twice": {"inputs": [BIG_GOOD["inputs"][0]] * 2 + BIG_GOOD["inputs"][1:]},
    "unknown input": _bad(BIG_GOOD, inputs__1__name="w"),
    "shape against data": _bad(BIG_GOOD, inputs__0__shape=[4, 6]),
    "over the element limit": _bad(BIG_GOOD, inputs__0__shape=[1 << 22, 6]),
    "unknown field": {**BIG_GOOD, "model": "linear"},
}


def test_a_large_json_request_is_read_by_a_worker_with_the_same_answers(
    client: TestClient, body_worker_calls: list[str]
) -> None:
    raw = orjson.dumps(BIG_GOOD)
    assert len(raw) > 1 << 20 and many_values(raw)
    response = client.post("/v2/models/linear/infer", content=raw)
    assert body_worker_calls == ["compact_body"]  # read by a body worker, not the server
    expected = F.linear(t(BIG), t(L)).numpy()
    np.testing.assert_allclose(output_of(response), expected, rtol=1e-5, atol=1e-5)
    small = {case[0]: case[2:] for case in BAD_REQUESTS}
    for name, body in LARGE_CASES.items():
        response = client.post("/v2/models/linear/infer", content=orjson.dumps(body))
        status, code = small[name]
        assert (response.status_code, response.json()["code"]) == (status, code), name
        assert isinstance(response.json()["error"], str)
    assert client.get("/v2/health/ready").status_code == 200


def test_a_large_json_part_of_a_binary_request_is_read_by_a_worker(
    client: TestClient, body_worker_calls: list[str]
) -> None:
    body = infer_json("linear", {"input": BIG, "weight": L})
    del body["inputs"][1]["data"]
    body["inputs"][1]["parameters"] = {"binary_data_size": L.nbytes}
    head = orjson.dumps(body)
    assert len(head) > 1 << 20 and many_values(head)
    response = client.post(
        "/v2/models/linear/infer", content=head + L.tobytes(), headers={FRAME: str(len(head))}
    )
    assert body_worker_calls == ["compact_body"]
    expected = F.linear(t(BIG), t(L)).numpy()
    np.testing.assert_allclose(output_of(response), expected, rtol=1e-5, atol=1e-5)


def test_bad_frames(client: TestClient) -> None:
    body = infer_json("relu", {"input": M})
    del body["inputs"][0]["data"]
    body["inputs"][0]["parameters"] = {"binary_data_size": M.nbytes}
    head = json.dumps(body).encode()
    for content, length, code in [
        (head + M.tobytes()[:-4], len(head), "binary_size_mismatch"),
        (head + M.tobytes() + b"\0", len(head), "binary_size_mismatch"),
        (head + M.tobytes(), len(head) + M.nbytes + 1, "invalid_header_length"),
        (head + M.tobytes(), len(head) - 2, "malformed_body"),
    ]:
        response = client.post(
            "/v2/models/relu/infer", content=content, headers={FRAME: str(length)}
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == code
    both = _bad(body, inputs__0__data=[0.0] * M.size)
    head = json.dumps(both).encode()
    response = client.post(
        "/v2/models/relu/infer", content=head + M.tobytes(), headers={FRAME: str(len(head))}
    )
    assert response.status_code == 422
    assert client.get("/v2/health/ready").status_code == 200


def test_binary_inputs_are_counted_before_they_are_read(client: TestClient) -> None:
    inputs = [
        {"name": f"x{i}", "shape": [1], "datatype": "UINT8", "parameters": {"binary_data_size": 1}}
        for i in range(MAX_TENSORS + 1)
    ]
    head = orjson.dumps({"inputs": inputs})
    response = client.post(
        "/v2/models/relu/infer",
        content=head + b"\1" * len(inputs),
        headers={FRAME: str(len(head))},
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_tensor"
    assert response.json()["details"] == {"allowed": MAX_TENSORS}


def test_a_json_part_that_is_no_object_is_a_422_whatever_the_content_type(
    client: TestClient,
) -> None:
    for part in (b"[1]", b"null", b"2"):
        response = client.post(
            "/v2/models/relu/infer",
            content=part,
            headers={FRAME: str(len(part)), "content-type": "application/octet-stream"},
        )
        assert response.status_code == 422, (part, response.text)
        assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("shape", [[], [3], [4, 3], [4, 1, 3], [4, 1, 3, 3, 1]])
def test_a_conv2d_weight_that_is_not_4d_is_a_422(client: TestClient, shape: list[int]) -> None:
    x = RNG.standard_normal((1, 1, 4, 4)).astype(np.float32)
    w = RNG.standard_normal(shape).astype(np.float32)
    response = client.post(
        "/v2/models/conv2d/infer", json=infer_json("conv2d", {"input": x, "weight": w})
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "shape_mismatch"
    assert response.json()["details"] == {"shape": shape}


def test_a_broadcast_matmul_is_charged_its_copies(client: TestClient) -> None:
    x = np.ones((256, 1, 1, 256), np.float32)
    y = np.ones((1, 256, 256, 1), np.float32)
    body = infer_json("matmul", {"input": x, "other": y})
    response = client.post("/v2/models/matmul/infer", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "elements_limit"
    assert response.json()["details"]["requested"] == 256**3


def test_not_json(client: TestClient) -> None:
    response = client.post("/v2/models/relu/infer", content=b"\x00\x01")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_body"


# --- Triton's client against a live server ---------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "TORCHLAB_DEVICE": "cpu",
        "TORCHLAB_LOG_LEVEL": "warning",
        "TORCHLAB_CALIBRATION": json.dumps(TEST_CALIBRATION),
    }
    server = start_server(env, Path(tmp_path_factory.mktemp("v2")) / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def triton(live: Server) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


def test_triton_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("relu")
    assert triton.is_model_ready("conv2d", "1")
    assert not triton.is_model_ready("nope")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata("linear")
    assert [i["name"] for i in meta["inputs"]] == ["input", "weight", "bias"]
    assert meta["outputs"][0]["name"] == "output"
    config = triton.get_model_config("linear")
    assert [(i["name"], i["data_type"]) for i in config["input"]] == [
        ("input", "TYPE_FP32"),
        ("weight", "TYPE_FP32"),
        ("bias", "TYPE_FP32"),
    ]
    assert config["max_batch_size"] == 0


def test_head_is_get_without_the_body(live: Server) -> None:
    """Uptime monitors and load balancers probe with HEAD: every GET route answers it, with
    the GET's headers and no body."""
    for path in ("/v2", "/v2/models/relu", "/v2/health/ready", "/health"):
        head = httpx.head(live.url + path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == "application/json"
    assert httpx.head(live.url + "/v2").headers["content-length"] == str(
        len(httpx.get(live.url + "/v2").content)
    )
    refused = httpx.head(live.url + "/tensor/ops")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"


def test_triton_reads_the_statistics(triton: Any) -> None:
    (before,) = triton.get_inference_statistics("sigmoid")["model_stats"]
    value = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for binary in (True, False):
        tensor = httpclient.InferInput("input", [3, 4], "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        result = triton.infer("sigmoid", [tensor])
        np.testing.assert_allclose(result.as_numpy("output"), torch.sigmoid(t(value)).numpy())
    (after,) = triton.get_inference_statistics("sigmoid", "1")["model_stats"]
    assert after["inference_count"] == before["inference_count"] + 2
    success = after["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 2
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    everything = triton.get_inference_statistics()["model_stats"]
    assert [entry["name"] for entry in everything] == list(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("name", "inputs", "parameters", "expected"), CASES, ids=CASE_IDS)
def test_triton_infer(
    triton: Any,
    binary: bool,
    name: str,
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any],
    expected: np.ndarray,
) -> None:
    infer_inputs = []
    for key, value in inputs.items():
        tensor = httpclient.InferInput(key, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        infer_inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("output", binary_data=binary)]
    result = triton.infer(name, infer_inputs, outputs=outputs, parameters=parameters or None)
    np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
    assert result.get_response()["model_name"] == name


def test_triton_sees_the_errors(triton: Any) -> None:
    bad = httpclient.InferInput("x", [2], "FP32")
    bad.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(triton_utils.InferenceServerException) as error:
        triton.infer("relu", [bad])
    assert error.value.status() == "422"
    assert "no input 'x'" in error.value.message()
    with pytest.raises(triton_utils.InferenceServerException) as error:
        triton.get_model_metadata("nope")
    assert error.value.status() == "404"
    assert triton.is_server_live()


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_a_half_precision_conv2d_runs_in_float32_on_the_cpu(
    client: TestClient, datatype: str
) -> None:
    """torch's float16 convolution on a CPU did not finish in 40 s for this one (64×64, a
    15×15 kernel in 2 groups) where it took under a millisecond for 40×40."""
    dtype = {"FP16": torch.float16, "BF16": torch.bfloat16}[datatype]
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 64, 64, generator=generator).to(dtype)
    w = (torch.rand(2, 1, 15, 15, generator=generator) / 10).to(dtype)
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 2, 64, 64],
                "datatype": datatype,
                "data": x.float().reshape(-1).tolist(),
            },
            {
                "name": "weight",
                "shape": [2, 1, 15, 15],
                "datatype": datatype,
                "data": w.float().reshape(-1).tolist(),
            },
        ],
        "parameters": {"groups": 2},
    }
    response = client.post("/v2/models/conv2d/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == datatype
    expected = F.conv2d(x.float(), w.float(), groups=2).to(dtype)
    got = torch.tensor(output["data"]).reshape(output["shape"]).to(dtype)
    torch.testing.assert_close(got, expected)
