"""Large bodies read by a worker: what comes back decodes to exactly what the body said."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from schemas.tensors import TensorOpsRequest
from service.api.bodies import BodyJob, compact_body, model_path
from service.codec import decode_tensor
from service.errors import LimitExceeded, TensorDecodeError
from service.limits import Deadline
from service.main import create_app
from tests.conftest import make_settings

MODEL = model_path(TensorOpsRequest)


def compact(body: object, max_elements: int = 1 << 24) -> bytes:
    result = compact_body(BodyJob(orjson.dumps(body), MODEL, max_elements), Deadline(30))
    assert result.body is not None, result
    return result.body


@pytest.mark.parametrize(
    "tensor",
    [
        np.arange(5000, dtype=np.int64).reshape(50, 100).tolist(),
        (np.linspace(-1, 1, 3000)).tolist(),
        [[True, False] * 1000],
        [[]] * 5000,
        {"data": np.arange(4096).tolist(), "dtype": "float64", "shape": [64, 64]},
        ["NaN", "Infinity", *([1.5] * 2000)],
    ],
    ids=["int-matrix", "floats", "bools", "empty-rows", "object-form", "non-finite"],
)
def test_large_inline_tensors_come_back_as_the_same_tensor_in_base64(tensor: object) -> None:
    body = {"inputs": {"a": tensor}, "steps": [{"op": "add", "x": "a", "y": tensor}]}
    compacted = orjson.loads(compact(body))
    expected = decode_tensor(tensor, max_elements=1 << 24)
    for value in (compacted["inputs"]["a"], compacted["steps"][0]["y"]):
        assert set(value) == {"shape", "dtype", "b64"}
        got = decode_tensor(value, max_elements=1 << 24)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    assert compacted["steps"][0]["op"] == "add"


def test_small_tensors_and_other_fields_are_left_as_they_are() -> None:
    body = {"inputs": {"a": [1, 2, 3]}, "steps": [{"op": "reshape", "x": "a", "shape": [3, 1]}]}
    assert orjson.loads(compact(body)) == body


def test_a_body_that_is_not_json_comes_back_as_its_error() -> None:
    result = compact_body(BodyJob(b'{"steps": [', MODEL, 100), Deadline(30))
    assert result.body is None and result.json_error is not None


def test_an_invalid_body_comes_back_as_its_validation_errors_with_keys_clipped() -> None:
    raw = orjson.dumps({"steps": [], "k" * 100_000: 1})
    result = compact_body(BodyJob(raw, MODEL, 100), Deadline(30))
    assert result.errors is not None
    assert all(len(str(part)) < 1000 for error in result.errors for part in error["loc"])


def test_a_tensor_the_codec_refuses_is_refused_with_its_path() -> None:
    ragged = [[1.0, 2.0]] * 1500 + [[1.0]]
    with pytest.raises(TensorDecodeError, match=r"inputs\.a"):
        compact({"inputs": {"a": ragged}, "steps": [{"op": "clone", "x": "a"}]})
    with pytest.raises(LimitExceeded) as info:
        compact({"inputs": {"a": [0.0] * 3000}, "steps": [{"op": "clone", "x": "a"}]}, 100)
    assert info.value.details["requested"] == 3000


def test_a_large_body_is_answered_as_a_small_one() -> None:
    values = np.linspace(0, 1, 150_000)
    body = {"inputs": {"a": values.tolist()}, "steps": [{"op": "sum", "x": "a", "out": "s"}]}
    with TestClient(create_app(make_settings())) as client:
        assert len(orjson.dumps(body)) > 1 << 20  # read by a worker process
        response = client.post("/tensor/ops", json=body)
        assert response.status_code == 200, response.text
        got = response.json()["outputs"]["s"]["data"]
        assert math.isclose(got, float(np.float32(values).sum()), rel_tol=1e-5)
        bad = {**body, "steps": []}
        assert client.post("/tensor/ops", json=bad).json()["code"] == "validation_error"
        ragged = {**body, "inputs": {"a": [[1.0, 2.0]] * 80_000 + [[1.0]]}}
        error = client.post("/tensor/ops", json=ragged).json()
        assert error["code"] == "ragged_tensor" or error["code"] == "invalid_tensor"
        assert "inputs.a" in error["error"]
