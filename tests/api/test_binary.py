"""The binary tensor data extension on torchlab's own routes (API.md §2): framed requests
(``Inference-Header-Content-Length``) and ``?encoding=binary`` responses.

Frames are built here by hand and responses read with numpy and torch, not with the
service's codec; expected values come from torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.common import MAX_TENSORS
from tests.unit.test_codec import (
    ALIAS_OF,
    NAMES,
    RAW_NUMPY,
    assert_same,
    from_wire_values,
    raw_bytes,
    tensors,
    to_wire_values,
)

FRAME = "Inference-Header-Content-Length"
API_EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def placeholder(tensor: torch.Tensor, name: str, key: str = "dtype") -> dict[str, Any]:
    size = tensor.numel() * tensor.element_size()
    return {"shape": list(tensor.shape), key: name, "binary_data_size": size}


def frame(body: dict[str, Any], payloads: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """A framed request body and its header."""
    head = orjson.dumps(body)
    return head + b"".join(payloads), {FRAME: str(len(head))}


def name_of(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def read_frame(response: Any) -> tuple[dict[str, Any], bytes]:
    """A binary answer's JSON and binary part, checked as the protocol says."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[FRAME])
    return orjson.loads(response.content[:length]), response.content[length:]


def tensors_of(answer: dict[str, Any], binary: bytes) -> Iterator[tuple[str, torch.Tensor]]:
    """Every binary tensor of an answer, in the order of its JSON text, read with numpy."""
    offset = 0
    stack: list[tuple[str, Any]] = [("", answer)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict) and "binary_data_size" in value:
            size = value["binary_data_size"]
            name = value["dtype"]
            array = np.frombuffer(binary[offset : offset + size], dtype=RAW_NUMPY[name])
            tensor = torch.from_numpy(array.copy())
            if name == "bfloat16":
                tensor = tensor.view(torch.int16).view(torch.bfloat16)
            yield where, tensor.reshape(value["shape"])
            offset += size
        elif isinstance(value, dict):
            stack.extend(reversed([(f"{where}.{k}", v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(value)]))
    assert offset == len(binary)


def clone_body(inputs: dict[str, Any]) -> dict[str, Any]:
    names = list(inputs)
    steps = [{"op": "clone", "x": name, "out": f"out_{name}"} for name in names]
    return {"inputs": inputs, "steps": steps, "return": [f"out_{name}" for name in names]}


# --- round trips ------------------------------------------------------------------------------


@API_EXAMPLES
@given(st.lists(tensors(), min_size=1, max_size=4), st.data())
def test_every_dtype_round_trips_binary_both_ways(
    client: TestClient, values: list[torch.Tensor], data: st.DataObject
) -> None:
    inputs, payloads = {}, []
    for index, tensor in enumerate(values):
        name = name_of(tensor)
        key = data.draw(st.sampled_from(["dtype", "datatype"]))
        inputs[f"t{index}"] = placeholder(
            tensor, data.draw(st.sampled_from([name, ALIAS_OF[name]])), key
        )
        payloads.append(raw_bytes(tensor, name))
    content, headers = frame(clone_body(inputs), payloads)
    response = client.post("/tensor/ops?encoding=binary", content=content, headers=headers)
    answer, binary = read_frame(response)
    got = dict(tensors_of(answer, binary))
    assert list(got) == [f".outputs.out_t{i}" for i in range(len(values))]  # in JSON order
    for index, tensor in enumerate(values):
        assert_same(got[f".outputs.out_t{index}"], tensor, bitwise_nan=True)


@API_EXAMPLES
@given(tensors(finite=True))
def test_binary_request_json_response(client: TestClient, tensor: torch.Tensor) -> None:
    name = name_of(tensor)
    content, headers = frame(
        clone_body({"a": placeholder(tensor, name)}), [raw_bytes(tensor, name)]
    )
    response = client.post("/tensor/ops", content=content, headers=headers)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"]["out_a"]
    assert out["shape"] == list(tensor.shape)
    expected = (tensor.float() if name == "bfloat16" else tensor).numpy()
    got = np.array(from_wire_values(out["data"]), dtype=expected.dtype).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)


@API_EXAMPLES
@given(tensors(finite=True))
def test_json_request_binary_response(client: TestClient, tensor: torch.Tensor) -> None:
    name = name_of(tensor)
    values = tensor.float() if name in ("float16", "bfloat16") else tensor
    wire = {"shape": list(tensor.shape), "dtype": name, "data": to_wire_values(values.tolist())}
    response = client.post("/tensor/ops?encoding=binary", json=clone_body({"a": wire}))
    answer, binary = read_frame(response)
    ((_, got),) = tensors_of(answer, binary)
    assert_same(got, tensor)


@API_EXAMPLES
@given(tensors(), st.booleans())
def test_every_dtype_round_trips_binary_through_v2(
    client: TestClient, tensor: torch.Tensor, alias: bool
) -> None:
    """The V2 route frames its inputs and output the same way (inputs' sizes in their
    ``parameters``, the protocol's dtype names); relu is torch's, on float32 for integers and
    bools as every activation takes them."""
    name = name_of(tensor)
    size = tensor.numel() * tensor.element_size()
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(tensor.shape),
                "datatype": ALIAS_OF[name] if alias else name,
                "parameters": {"binary_data_size": size},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    content, headers = frame(body, [raw_bytes(tensor, name)])
    response = client.post("/v2/models/relu/infer", content=content, headers=headers)
    answer, binary = read_frame(response)
    expected = torch.relu(tensor if tensor.is_floating_point() else tensor.float())
    out_name = name_of(expected)
    (output,) = answer["outputs"]
    assert output["datatype"] == ALIAS_OF[out_name]
    assert output["shape"] == list(tensor.shape)
    assert output["parameters"]["binary_data_size"] == len(binary)
    assert len(binary) == expected.numel() * expected.element_size()
    got = torch.from_numpy(np.frombuffer(binary, dtype=RAW_NUMPY[out_name]).copy())
    if out_name == "bfloat16":
        got = got.view(torch.int16).view(torch.bfloat16)
    assert_same(got.reshape(tensor.shape), expected)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_activate_binary(client: TestClient, name: str) -> None:
    x = torch.linspace(-3, 3, 50, dtype=torch.float64).to(getattr(torch, name)).reshape(5, 10)
    body = {"functions": ["relu", "tanh"], "x": placeholder(x, name), "derivative": True}
    content, headers = frame(body, [raw_bytes(x, name)])
    response = client.post("/activate?encoding=binary", content=content, headers=headers)
    answer, binary = read_frame(response)
    got = dict(tensors_of(answer, binary))
    results = answer["results"]
    assert [r["function"] for r in results] == ["relu", "tanh"]
    assert_same(got[".results[0].y"], torch.relu(x))
    torch.testing.assert_close(got[".results[1].y"], torch.tanh(x))


def test_conv_takes_a_binary_input(client: TestClient) -> None:
    """``/conv`` reads JSON or multipart bodies (service.api.forms): framed ones too."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 9, 11, generator=generator)
    kernel = torch.randn(3, 3, generator=generator)
    body = {"input": placeholder(x, "float32"), "kernels": [placeholder(kernel, "FP32")]}
    content, headers = frame(body, [raw_bytes(x, "float32"), raw_bytes(kernel, "float32")])
    response = client.post("/conv?encoding=binary", content=content, headers=headers)
    answer, binary = read_frame(response)
    got = dict(tensors_of(answer, binary))
    expected = torch.nn.functional.conv2d(x, kernel.reshape(1, 1, 3, 3))
    torch.testing.assert_close(got[".output"], expected)


def test_linear_regression_takes_binary_tensors(client: TestClient) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, dtype=torch.float64, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 3.0
    body = {"x": placeholder(x, "float64"), "y": placeholder(y, "FP64")}
    content, headers = frame(body, [raw_bytes(x, "float64"), raw_bytes(y, "float64")])
    response = client.post("/regress/linear", content=content, headers=headers)
    assert response.status_code == 200, response.text
    model = response.json()["model"]
    np.testing.assert_allclose(model["coef"], [1.0, -2.0, 0.5], atol=1e-9)
    assert math.isclose(model["intercept"], 3.0, abs_tol=1e-9)


def test_misaligned_tensors_are_read_right(client: TestClient) -> None:
    """A 3-byte bool tensor puts the float64 after it off its alignment: read by a copy."""
    flags = torch.tensor([True, False, True])
    values = torch.tensor([1.5, -2.25, math.pi], dtype=torch.float64)
    inputs = {"f": placeholder(flags, "bool"), "v": placeholder(values, "float64")}
    content, headers = frame(
        clone_body(inputs), [raw_bytes(flags, "bool"), raw_bytes(values, "float64")]
    )
    answer, binary = read_frame(
        client.post("/tensor/ops?encoding=binary", content=content, headers=headers)
    )
    got = dict(tensors_of(answer, binary))
    assert_same(got[".outputs.out_f"], flags)
    assert_same(got[".outputs.out_v"], values)


@pytest.mark.parametrize("size", [1 << 10, 1 << 19], ids=["small", "shared-memory"])
def test_large_tensors_and_a_large_json_part(client: TestClient, size: int) -> None:
    """Past 64 KiB the binary part is received into shared memory; a JSON part past 16 KiB
    is parsed in a thread. Both still give the tensors back exactly."""
    big = torch.arange(size, dtype=torch.float32)
    listed = list(range(5000))  # a JSON part of tens of kilobytes
    inputs = {"big": placeholder(big, "float32"), "listed": {"data": listed, "dtype": "int64"}}
    content, headers = frame(clone_body(inputs), [raw_bytes(big, "float32")])
    answer, binary = read_frame(
        client.post("/tensor/ops?encoding=binary", content=content, headers=headers)
    )
    got = dict(tensors_of(answer, binary))
    assert_same(got[".outputs.out_big"], big)
    assert_same(got[".outputs.out_listed"], torch.tensor(listed))


def test_a_json_part_past_a_megabyte(client: TestClient) -> None:
    """A JSON part over 1 MiB is read by a worker process first (service.api.bodies), which
    leaves the binary tensors' placeholders where they are."""
    listed = list(range(300_000))
    small = torch.arange(7, dtype=torch.int16)
    inputs = {"listed": listed, "small": placeholder(small, "int16")}
    content, headers = frame(clone_body(inputs), [raw_bytes(small, "int16")])
    assert int(headers[FRAME]) > 1 << 20
    answer, binary = read_frame(
        client.post("/tensor/ops?encoding=binary", content=content, headers=headers)
    )
    got = dict(tensors_of(answer, binary))
    assert_same(got[".outputs.out_small"], small)
    assert_same(got[".outputs.out_listed"], torch.tensor(listed))


def test_content_type_is_not_required(client: TestClient) -> None:
    x = torch.ones(4)
    content, headers = frame(clone_body({"a": placeholder(x, "FP32")}), [raw_bytes(x, "float32")])
    for content_type in (None, "application/octet-stream", "text/plain"):
        sent = dict(headers) if content_type is None else {**headers, "content-type": content_type}
        response = client.post("/tensor/ops", content=content, headers=sent)
        assert response.status_code == 200, (content_type, response.text)


def test_a_chunked_binary_body(client: TestClient) -> None:
    x = torch.arange(1000, dtype=torch.int32)
    content, headers = frame(clone_body({"a": placeholder(x, "int32")}), [raw_bytes(x, "int32")])
    pieces = [content[i : i + 333] for i in range(0, len(content), 333)]
    response = client.post("/tensor/ops?encoding=binary", content=iter(pieces), headers=headers)
    answer, binary = read_frame(response)
    ((_, got),) = tensors_of(answer, binary)
    assert_same(got, x)


def test_errors_stay_json(client: TestClient) -> None:
    x = torch.ones(2, 2)
    body = {"inputs": {"a": placeholder(x, "float32")}, "steps": [{"op": "nope", "x": "a"}]}
    content, headers = frame(body, [raw_bytes(x, "float32")])
    response = client.post("/tensor/ops?encoding=binary", content=content, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert FRAME not in response.headers


def test_binary_tensor_without_the_header_is_refused(client: TestClient) -> None:
    x = torch.ones(2)
    response = client.post("/tensor/ops", json=clone_body({"a": placeholder(x, "float32")}))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_tensor"


def test_limits_hold_for_binary_tensors(client: TestClient) -> None:
    """The element limit (2**22 in the test settings) refuses a binary tensor as any other;
    the body limit (4 MiB) refuses a larger body before it is read."""
    wide = torch.zeros((1 << 22) + 1, dtype=torch.bool)
    content, headers = frame(
        clone_body({"a": placeholder(wide, "bool")}), [raw_bytes(wide, "bool")]
    )
    response = client.post("/tensor/ops", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json()["code"] in {"elements_limit", "body_size_limit"}


# --- malformed frames -------------------------------------------------------------------------


def good_frame() -> tuple[dict[str, Any], list[bytes]]:
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([1, 2], dtype=torch.int64)
    body = clone_body({"a": placeholder(a, "float32"), "b": placeholder(b, "INT64")})
    return body, [raw_bytes(a, "float32"), raw_bytes(b, "int64")]


def _bad_frames() -> Iterator[tuple[str, bytes, dict[str, str], int, str]]:
    body, payloads = good_frame()
    content, headers = frame(body, payloads)
    length = int(headers[FRAME])
    yield "short", content[:-1], headers, 400, "binary_size_mismatch"
    yield "long", content + b"\0", headers, 400, "binary_size_mismatch"
    yield (
        "header past the body",
        content,
        {FRAME: str(len(content) + 1)},
        400,
        "invalid_header_length",
    )
    yield "negative", content, {FRAME: "-1"}, 400, "invalid_header_length"
    yield "not a number", content, {FRAME: "twelve"}, 400, "invalid_header_length"
    yield "empty", content, {FRAME: ""}, 400, "invalid_header_length"
    yield "a float", content, {FRAME: f"{length}.0"}, 400, "invalid_header_length"
    yield "unicode digits", content, {FRAME: "١٢".encode()}, 400, "invalid_header_length"  # type: ignore[dict-item]
    yield "huge", content, {FRAME: "9" * 40}, 400, "invalid_header_length"
    yield "header cuts the JSON", content, {FRAME: str(length - 1)}, 400, "malformed_body"
    yield "header zero", content, {FRAME: "0"}, 400, "malformed_body"
    mismatched = orjson.loads(orjson.dumps(body))
    mismatched["inputs"]["a"]["binary_data_size"] = 20
    yield "size against shape", *frame(mismatched, payloads), 422, "shape_mismatch"
    negative = orjson.loads(orjson.dumps(body))
    negative["inputs"]["b"]["binary_data_size"] = -16
    yield "negative size", *frame(negative, payloads), 422, "invalid_tensor"
    text = orjson.loads(orjson.dumps(body))
    text["inputs"]["b"]["binary_data_size"] = "16"
    yield "size as text", *frame(text, payloads), 422, "invalid_tensor"
    extra = orjson.loads(orjson.dumps(body))
    extra["inputs"]["b"]["b64"] = ""
    yield "unknown key", *frame(extra, payloads), 422, "invalid_tensor"
    strings = orjson.loads(orjson.dumps(body))
    strings["inputs"]["b"]["dtype"] = "BYTES"
    yield "BYTES", *frame(strings, payloads), 400, "unsupported_datatype"
    flags = clone_body({"f": {"shape": [2], "dtype": "bool", "binary_data_size": 2}})
    yield "bool bytes", *frame(flags, [b"\x01\x02"]), 422, "invalid_data"
    # 2**64 bytes: a size past 64 bits in the error's details (orjson writes none).
    vast = clone_body(
        {"v": {"shape": [1 << 32, 1 << 32], "dtype": "float32", "binary_data_size": 4}}
    )
    yield "size past 64 bits", *frame(vast, [b"\0" * 4]), 422, "shape_mismatch"
    # Read as JSON whatever the Content-Type: a JSON part that is not an object is a 422.
    for part in (b"[1]", b"null", b'"x"'):
        sent = {FRAME: str(len(part)), "content-type": "application/octet-stream"}
        yield f"JSON part {part.decode()}", part, sent, 422, "validation_error"
    many = clone_body(
        {
            f"a{i}": {"shape": [1], "dtype": "uint8", "binary_data_size": 1}
            for i in range(MAX_TENSORS + 1)
        }
    )
    yield (
        "one binary tensor too many",
        *frame(many, [b"\1" * (MAX_TENSORS + 1)]),
        422,
        "invalid_tensor",
    )


BAD_FRAMES = list(_bad_frames())


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [case[1:] for case in BAD_FRAMES],
    ids=[case[0] for case in BAD_FRAMES],
)
def test_malformed_frames_are_refused(
    client: TestClient, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = client.post("/tensor/ops", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert client.get("/health").status_code == 200
    body, payloads = good_frame()
    good, good_headers = frame(body, payloads)
    assert client.post("/tensor/ops", content=good, headers=good_headers).status_code == 200


@pytest.mark.parametrize(
    ("pieces", "code"),
    [((b"x" * 10,), "invalid_header_length"), ((b"{}",), "binary_size_mismatch")],
    ids=["body shorter than its header", "binary part missing"],
)
def test_malformed_chunked_frames(client: TestClient, pieces: tuple[bytes, ...], code: str) -> None:
    """Without Content-Length the sizes are checked as the body streams in."""
    body, payloads = good_frame()
    content, headers = frame(body, payloads)
    if code == "binary_size_mismatch":
        pieces = (content[: int(headers[FRAME])],)
        chunks = iter(pieces)
    else:
        headers = {FRAME: "100"}
        chunks = iter(pieces)
    response = client.post("/tensor/ops", content=chunks, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert client.get("/health").status_code == 200


def test_a_chunked_body_whose_tensors_pass_the_body_limit_is_413_before_they_are_read(
    client: TestClient,
) -> None:
    # No Content-Length: the tensors' sizes say how much is coming. Three of 2^25 float64
    # (805 MB, whose buffer would be taken as soon as the JSON part is read) are refused
    # from the JSON part alone.
    n = 1 << 25
    inputs = {k: {"shape": [n], "dtype": "float64", "binary_data_size": n * 8} for k in "abc"}
    part = orjson.dumps({"inputs": inputs, "steps": [{"op": "clone", "x": "a"}]})
    response = client.post("/tensor/ops", content=iter([part]), headers={FRAME: str(len(part))})
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "body_size_limit"
    assert response.json()["details"] == {
        "limit": "max_body_bytes",
        "allowed": client.app.state.settings.limits.max_body_bytes,
        "requested": len(part) + 3 * n * 8,
    }
    assert client.get("/health").status_code == 200


def test_the_binary_encoding_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/tensor/ops"]["post"]
    (encoding,) = [p for p in operation["parameters"] if p["name"] == "encoding"]
    assert "binary" in encoding["schema"]["enum"]
    ok = operation["responses"]["200"]
    assert "application/octet-stream" in ok["content"]
    assert FRAME in ok["headers"]


@pytest.mark.parametrize("name", NAMES)
def test_response_size_limit_counts_raw_bytes(name: str) -> None:
    from service.codec import estimate_encoded_bytes  # noqa: PLC0415

    dtype = getattr(torch, name)
    assert estimate_encoded_bytes(1000, dtype, "binary") == 1000 * dtype.itemsize + 64
