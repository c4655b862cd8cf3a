"""The tensor wire format through HTTP (API.md §2 and §3), on ``POST /tensor/ops``.

A ``clone`` step returns its input, so what comes back must be what went in. Responses are
read back with numpy/torch here, not with the service's codec; expected values come from
torch.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import Settings
from tests.conftest import ops
from tests.unit.test_codec import (
    ALIAS_OF,
    DTYPES,
    MALFORMED,
    NAMES,
    RAW_NUMPY,
    assert_same,
    from_wire_values,
    raw_bytes,
    tensors,
    to_wire_values,
)

API_EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FORMS = ["nested", "nested+dtype", "flat+shape", "b64"]


def clone_body(tensor: object) -> dict[str, Any]:
    return {"inputs": {"a": tensor}, "steps": [{"op": "clone", "x": "a"}]}


def post(client: TestClient, body: dict[str, Any], **params: str) -> Any:
    """POST /tensor/ops with the body written by json.dumps (big ints and all)."""
    return client.post(
        "/tensor/ops",
        content=json.dumps(body, allow_nan=False),
        headers={"content-type": "application/json"},
        params=params,
    )


def read_tensor(body: dict[str, Any]) -> torch.Tensor:
    """A response tensor, read without the service's codec."""
    name, shape = body["dtype"], body["shape"]
    dtype = DTYPES[name]
    if "b64" in body:
        assert set(body) == {"shape", "dtype", "b64"}
        raw = base64.b64decode(body["b64"], validate=True)
        array = np.frombuffer(raw, dtype=RAW_NUMPY[name]).copy()
        if name == "bfloat16":
            return torch.from_numpy(array.view("<i2").astype(np.int16)).view(dtype).reshape(shape)
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("="))).reshape(shape)
    assert set(body) == {"shape", "dtype", "data"}
    values = from_wire_values(body["data"])
    if name in {"float16", "float32", "float64"}:
        return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)
    if name == "bfloat16":  # JSON numbers are float32 values
        return torch.tensor(values, dtype=torch.float64).float().to(dtype).reshape(shape)
    return torch.tensor(values, dtype=dtype).reshape(shape)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code", "details"}
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["details"], dict)
    assert body["code"] == code, body
    return body


def wire_form(tensor: torch.Tensor, form: str, key: str, alias: bool) -> tuple[Any, torch.Tensor]:
    """The tensor written in one input form, and what the server must make of it."""
    name = str(tensor.dtype).removeprefix("torch.")
    dtype = {key: ALIAS_OF[name] if alias else name}
    nested = to_wire_values(tensor.tolist())
    if form == "nested":
        return nested, torch.tensor(from_wire_values(nested))
    if form == "nested+dtype":
        expected_shape = torch.tensor(from_wire_values(nested)).shape  # [] for [0, 0]
        return {"data": nested, **dtype}, tensor.reshape(expected_shape)
    if form == "flat+shape":
        flat = to_wire_values(tensor.reshape(-1).tolist())
        return {"data": flat, "shape": list(tensor.shape), **dtype}, tensor
    b64 = base64.b64encode(raw_bytes(tensor, name)).decode()
    return {"b64": b64, "shape": list(tensor.shape), **dtype}, tensor


# --- round trips ---------------------------------------------------------------------------------


@API_EXAMPLES
@given(
    tensor=tensors(),
    form=st.sampled_from(FORMS),
    encoding=st.sampled_from(["json", "b64"]),
    key=st.sampled_from(["dtype", "datatype"]),
    alias=st.booleans(),
    inline=st.booleans(),
)
def test_clone_returns_the_input(
    client: TestClient,
    tensor: torch.Tensor,
    form: str,
    encoding: str,
    key: str,
    alias: bool,
    inline: bool,
) -> None:
    value, expected = wire_form(tensor, form, key, alias)
    if inline:  # the same tensor written inline in the step instead of as a named input
        body: dict[str, Any] = {"steps": [{"op": "clone", "x": value}]}
    else:
        body = clone_body(value)
    params = {"encoding": "b64"} if encoding == "b64" else {}
    response = post(client, body, **params)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"outputs", "device", "elapsed_ms"}
    out = result["outputs"]["out"]
    assert ("b64" in out) == (encoding == "b64")
    assert out["shape"] == list(expected.shape)
    assert out["dtype"] == str(expected.dtype).removeprefix("torch.")
    # raw bytes in and out: bit for bit, NaN payloads included
    assert_same(read_tensor(out), expected, bitwise_nan=form == "b64" and encoding == "b64")


@pytest.mark.parametrize("encoding", ["json", "b64"])
@pytest.mark.parametrize("name", NAMES)
def test_every_dtype_through_http(client: TestClient, name: str, encoding: str) -> None:
    data = [[True, False, True]] if name == "bool" else [[0, 1, 2], [3, 4, 5]]
    expected = torch.tensor(data, dtype=DTYPES[name])
    params = {"encoding": "b64"} if encoding == "b64" else {}
    result = ops(client, clone_body({"data": data, "dtype": name}), **params)
    assert_same(read_tensor(result["outputs"]["out"]), expected)  # type: ignore[index]


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_non_finite_floats_through_http(client: TestClient, name: str) -> None:
    data = ["NaN", "Infinity", "-Infinity", 0.5]
    result = ops(client, clone_body({"data": data, "dtype": name}))
    out = result["outputs"]["out"]  # type: ignore[index]
    assert out["data"] == data
    expected = torch.tensor([math.nan, math.inf, -math.inf, 0.5], dtype=DTYPES[name])
    assert_same(read_tensor(out), expected)


def test_zero_d_through_http(client: TestClient) -> None:
    for value, dtype in ((5, "int64"), (2.5, "float32"), (True, "bool"), ("NaN", "float32")):
        result = ops(client, clone_body(value))
        assert result["outputs"] == {"out": {"shape": [], "dtype": dtype, "data": value}}


def test_response_b64_is_little_endian_c_order(client: TestClient) -> None:
    tensor = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    result = ops(client, clone_body(tensor.tolist()), encoding="b64")
    out = result["outputs"]["out"]  # type: ignore[index]
    assert out["dtype"] == "int64"
    expected = tensor.to(torch.int64).numpy().astype("<i8").tobytes(order="C")
    assert base64.b64decode(out["b64"]) == expected


# --- errors ------------------------------------------------------------------------------------


# JSON integers beyond 64 bits are read as floats by the body parser (as JavaScript's
# JSON.parse reads them), so they never reach the codec as integers; and a whole-number
# float is an integer to the request's schema (as to JSON Schema), so a shape of ``[1.0]``
# reaches the codec as ``[1]``.
OVER_THE_WIRE_MALFORMED = [
    case for case in MALFORMED if "beyond 64 bits" not in case[0] and case[0] != "shape of floats"
]


def test_integers_beyond_64_bits_arrive_as_floats(client: TestClient) -> None:
    body = post(client, clone_body([2**70])).json()
    out = body["outputs"]["out"]
    assert out["dtype"] == "float32"
    assert (
        torch.tensor(out["data"], dtype=torch.float32).item()
        == torch.tensor([float(2**70)], dtype=torch.float32).item()
    )


def test_a_shape_of_whole_number_floats_is_a_shape_of_integers(client: TestClient) -> None:
    out = ops(client, clone_body({"data": [1, 2], "shape": [2.0, 1.0]}))["outputs"]["out"]  # type: ignore[index]
    assert out["shape"] == [2, 1]
    body = assert_error(
        post(client, clone_body({"data": [1], "shape": [1.5]})), 422, "invalid_shape"
    )
    assert body["error"].startswith("inputs.a")


@pytest.mark.parametrize(
    ("value", "code"),
    [case[1:] for case in OVER_THE_WIRE_MALFORMED],
    ids=[case[0] for case in OVER_THE_WIRE_MALFORMED],
)
def test_malformed_input_is_422(client: TestClient, value: object, code: str) -> None:
    body = assert_error(post(client, clone_body(value)), 422, code)
    assert body["error"].startswith("inputs.a")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([[1, 2], [3]], "ragged_tensor"),
        ({"data": [1, 2], "shape": [3]}, "shape_mismatch"),
        ({"data": [1], "shape": [1] * 9}, "too_many_dims"),
        ({"data": [1], "dtype": "float8"}, "invalid_dtype"),
        ({"b64": "@@@@", "shape": [3], "dtype": "uint8"}, "invalid_base64"),
        ({"data": [1], "stride": [1]}, "invalid_tensor"),
        ({"data": [1.0, "one"]}, "invalid_data"),
    ],
)
@pytest.mark.parametrize("field", ["x", "y"])
def test_malformed_inline_tensor_is_422(
    client: TestClient, value: object, code: str, field: str
) -> None:
    step = {"op": "add", "x": "a", "y": "a", field: value}
    response = post(client, {"inputs": {"a": [1]}, "steps": [step]})
    body = assert_error(response, 422, code)
    assert body["error"].startswith(f"steps.0.{field}")


def test_nine_dims_is_422(client: TestClient) -> None:
    nine: Any = [1]
    for _ in range(8):
        nine = [nine]
    body = assert_error(post(client, clone_body(nine)), 422, "too_many_dims")
    assert body["details"] == {"ndim": 9, "max_ndim": 8}
    eight = nine[0]
    assert post(client, clone_body(eight)).status_code == 200


def test_element_limit_is_413_in_milliseconds(client: TestClient, settings: Settings) -> None:
    value = {"b64": "AA==", "shape": [10**6, 10**6], "dtype": "float32"}
    response = post(client, clone_body(value))
    body = assert_error(response, 413, "elements_limit")
    assert body["details"] == {
        "limit": "max_elements",
        "allowed": settings.limits.max_elements,
        "requested": 10**12,
    }
    assert response.elapsed.total_seconds() < 1.0
    # the server is fine afterwards
    assert ops(client, clone_body([1]))["outputs"]["out"]["data"] == [1]  # type: ignore[index]


def test_huge_declared_shape_is_not_a_500(client: TestClient) -> None:
    for shape, status, code in (
        ([10**18, 10**18], 413, "elements_limit"),
        ([10**30], 422, "invalid_shape"),
        ([0, 10**30], 422, "invalid_shape"),
        ([0, 2**62, 2**62], 422, "invalid_shape"),
    ):
        assert_error(post(client, clone_body({"data": [], "shape": shape})), status, code)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"inputs": {"a": [1, 2]}', b'{"inputs": {"a": [1,]}}', b"\xff\xfe"],
)
def test_body_not_json_is_400(client: TestClient, content: bytes) -> None:
    response = client.post(
        "/tensor/ops", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "malformed_body")


def test_unknown_top_level_field_is_422(client: TestClient) -> None:
    body = {**clone_body([1]), "input": {"b": [2]}}
    result = assert_error(post(client, body), 422, "validation_error")
    assert "input" in result["error"]


def test_unknown_step_field_is_422(client: TestClient) -> None:
    body = {"inputs": {"a": [1]}, "steps": [{"op": "clone", "x": "a", "dtype": "float32"}]}
    assert_error(post(client, body), 422, "validation_error")


# --- inline tensors in steps ------------------------------------------------------------------


def sample(name: str, values: list[int]) -> list[Any]:
    return [bool(v % 2) for v in values] if name == "bool" else values


@pytest.mark.parametrize("y_name", NAMES)
@pytest.mark.parametrize("x_name", NAMES)
def test_inline_add_follows_torch_promotion(client: TestClient, x_name: str, y_name: str) -> None:
    x = torch.tensor(sample(x_name, [1, 2]), dtype=DTYPES[x_name])
    y = torch.tensor(sample(y_name, [3, 0]), dtype=DTYPES[y_name])
    expected = torch.add(x, y)
    body = {
        "inputs": {"a": {"data": x.tolist(), "dtype": x_name}},
        "steps": [{"op": "add", "x": "a", "y": {"data": y.tolist(), "dtype": y_name}}],
    }
    result = ops(client, body)
    out = result["outputs"]["out"]  # type: ignore[index]
    assert out["dtype"] == str(expected.dtype).removeprefix("torch.")
    assert_same(read_tensor(out), expected)


def test_inline_example_from_the_brief(client: TestClient) -> None:
    body = {
        "inputs": {"a": [1, 2]},
        "steps": [{"op": "add", "x": "a", "y": {"data": [1, 2], "dtype": "float64"}}],
    }
    expected = torch.tensor([1, 2]) + torch.tensor([1, 2], dtype=torch.float64)
    assert_same(read_tensor(ops(client, body)["outputs"]["out"]), expected)  # type: ignore[index]


@pytest.mark.parametrize(
    ("op", "x", "y"),
    [
        # a 0-d tensor of a higher category promotes; of the same category it does not
        ("add", torch.tensor([1, 2], dtype=torch.int32), torch.tensor(2.5, dtype=torch.float64)),
        ("add", torch.tensor([1.0, 2.0]), torch.tensor(2.5, dtype=torch.float64)),
        ("mul", torch.tensor([1, 2], dtype=torch.uint8), torch.tensor(3, dtype=torch.int64)),
        ("mul", torch.tensor([1, 2], dtype=torch.int8), torch.tensor([3, 4], dtype=torch.uint8)),
        ("sub", torch.tensor([[1.0], [2.0]], dtype=torch.float16), torch.tensor([1, 2, 3])),
        ("div", torch.tensor([1, 2]), torch.tensor([2, 4])),
        ("div", torch.tensor([1, 2], dtype=torch.int16), torch.tensor([2.0], dtype=torch.bfloat16)),
        ("add", torch.tensor([True, False]), torch.tensor([True, True])),
        ("mul", torch.tensor([True, False]), torch.tensor([1.5, 2.0], dtype=torch.float64)),
    ],
)
@pytest.mark.parametrize("y_form", ["nested+dtype", "flat+shape", "b64"])
@pytest.mark.parametrize("encoding", ["json", "b64"])
def test_inline_operands_in_every_form(
    client: TestClient, op: str, x: torch.Tensor, y: torch.Tensor, y_form: str, encoding: str
) -> None:
    expected = getattr(torch, op)(x, y)
    x_wire, _ = wire_form(x, "flat+shape", "dtype", alias=False)
    y_wire, y_decoded = wire_form(y, y_form, "datatype", alias=True)
    assert_same(y_decoded, y)
    body = {"steps": [{"op": op, "x": x_wire, "y": y_wire}]}
    params = {"encoding": "b64"} if encoding == "b64" else {}
    out = ops(client, body, **params)["outputs"]["out"]  # type: ignore[index]
    assert out["dtype"] == str(expected.dtype).removeprefix("torch.")
    assert_same(read_tensor(out), expected)


def test_inline_nested_operand_infers_like_torch(client: TestClient) -> None:
    """An inline nested list infers int64/float32 like torch.tensor, then promotes."""
    a = torch.tensor([1, 2], dtype=torch.int8)
    for y in ([[10], [20]], [0.5, 1.5], [True, False]):
        expected = torch.add(a, torch.tensor(y))
        body = {
            "inputs": {"a": {"data": a.tolist(), "dtype": "int8"}},
            "steps": [{"op": "add", "x": "a", "y": y}],
        }
        out = ops(client, body)["outputs"]["out"]  # type: ignore[index]
        assert_same(read_tensor(out), expected)


def test_python_number_operand_keeps_the_tensor_dtype(client: TestClient) -> None:
    a = torch.tensor([1, 2], dtype=torch.int16)
    for y in (3, 2.5):
        expected = torch.add(a, y)
        body = {
            "inputs": {"a": {"data": a.tolist(), "dtype": "int16"}},
            "steps": [{"op": "add", "x": "a", "y": y}],
        }
        out = ops(client, body)["outputs"]["out"]  # type: ignore[index]
        assert_same(read_tensor(out), expected)


def test_inline_tensors_in_a_list_argument(client: TestClient) -> None:
    b64 = base64.b64encode(np.array([5, 6], dtype="<i8").tobytes()).decode()
    body = {
        "inputs": {"a": [1, 2]},
        "steps": [
            {
                "op": "cat",
                "tensors": ["a", [3, 4], {"b64": b64, "shape": [2], "dtype": "INT64"}],
                "dim": 0,
            }
        ],
    }
    out = ops(client, body)["outputs"]["out"]  # type: ignore[index]
    assert_same(read_tensor(out), torch.arange(1, 7))
