"""The client's binary framing: large tensors go as raw bytes after the JSON, answers come
back binary and are read into one writable buffer that the arrays view (no second copy)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI

from tests.clients.conftest import run_async, tl

FRAME = "Inference-Header-Content-Length"
DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def sample(dtype: str, shape: tuple[int, ...] = (80, 60)) -> np.ndarray:
    from tests.clients.test_codec import sample as make  # noqa: PLC0415

    return make(dtype, shape)


def buffer_of(array: np.ndarray) -> object:
    """The object whose memory ``array`` views, past numpy's views and memoryviews."""
    base: object = array
    while isinstance(base, np.ndarray | memoryview):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return base


def json_part(request: httpx.Request) -> dict[str, Any]:
    length = int(request.headers[FRAME])
    parsed: dict[str, Any] = json.loads(request.content[:length])
    return parsed


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_go_and_come_back_binary(dtype: str, recorded: tuple[Any, Any]) -> None:
    test_client, recorder = recorded
    array = sample(dtype)
    with tl.Client(http_client=test_client) as client:
        out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    sent = recorder.last
    assert sent.url.params["encoding"] == "binary"
    assert sent.headers["content-type"] == "application/octet-stream"
    wire = json_part(sent)["inputs"]["a"]
    assert wire == {"shape": [80, 60], "dtype": dtype, "binary_data_size": array.nbytes}
    length = int(sent.headers[FRAME])
    assert length % 64 == 0  # padded with spaces: the bytes after it start aligned
    assert (
        sent.content[length:]
        == np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    )


def test_small_arrays_stay_json_and_order_is_kept(recorded: tuple[Any, Any]) -> None:
    test_client, recorder = recorded
    big, small, other = np.arange(2000.0), np.arange(3, dtype=np.int32), np.ones((80, 80), bool)
    with tl.Client(http_client=test_client) as client:
        out = client.tensor_ops(
            [
                {"op": "clone", "x": "b", "out": "b"},
                {"op": "clone", "x": "s", "out": "s"},
                {"op": "clone", "x": "o", "out": "o"},
            ],
            {"b": big, "s": small, "o": other},
            ["b", "s", "o"],
        )
    inputs = json_part(recorder.last)["inputs"]
    assert "data" in inputs["s"]
    assert inputs["b"]["binary_data_size"] == big.nbytes
    assert inputs["o"]["binary_data_size"] == other.nbytes
    for name, array in {"b": big, "s": small, "o": other}.items():
        np.testing.assert_array_equal(out[name], array)


def test_answers_are_writable_views_of_one_buffer(sync_client: tl.Client) -> None:
    a, b = np.arange(3000.0), np.arange(3000, dtype=np.int64)
    out = sync_client.tensor_ops(
        [{"op": "clone", "x": "a", "out": "p"}, {"op": "clone", "x": "b", "out": "q"}],
        {"a": a, "b": b},
        ["p", "q"],
    )
    p, q = out["p"], out["q"]
    assert p.flags.writeable and q.flags.writeable
    assert p.flags.aligned and q.flags.aligned
    assert buffer_of(p) is buffer_of(q)  # both views of the buffer the answer was read into
    assert isinstance(buffer_of(p), bytearray)
    p[0] = 42.0  # writable, and nothing else changes
    assert q[0] == 0


def test_torch_tensors_and_bfloat16(sync_client: tl.Client) -> None:
    tensor = torch.randn(100, 30).to(torch.bfloat16)
    out = sync_client.tensor_ops({"op": "clone", "x": "a"}, {"a": tensor}, as_torch=True)["out"]
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, tensor)
    array = sync_client.tensor_ops({"op": "clone", "x": "a"}, {"a": tensor})["out"]
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, tensor.float().numpy())


def test_async_client_binary(app: FastAPI) -> None:
    x = np.random.default_rng(0).standard_normal((500, 20))
    y = x @ np.arange(20.0) + 1.0

    async def scenario(client: tl.AsyncClient) -> Any:
        fitted = await client.linear_regression(x, y)
        activated = await client.activate("relu", x.astype(np.float32))
        return fitted, activated

    fitted, activated = run_async(app, scenario)
    np.testing.assert_allclose(fitted.model.coef, np.arange(20.0), atol=1e-8)
    np.testing.assert_array_equal(activated["relu"].y, np.maximum(x.astype(np.float32), 0))


def test_binary_can_be_turned_off(recorded: tuple[Any, Any]) -> None:
    test_client, recorder = recorded
    array = np.arange(5000.0)
    with tl.Client(http_client=test_client, binary=False) as client:
        out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
    np.testing.assert_array_equal(out, array)
    sent = recorder.last
    assert FRAME not in sent.headers
    assert "b64" in json.loads(sent.content)["inputs"]["a"]
    assert sent.url.params["encoding"] == "b64"


@pytest.mark.parametrize(
    ("setting", "expected"), [("binary", "binary"), ("b64", "b64"), ("json", None)]
)
def test_response_encoding_can_be_chosen(
    setting: Any, expected: str | None, recorded: tuple[Any, Any]
) -> None:
    test_client, recorder = recorded
    with tl.Client(http_client=test_client, response_encoding=setting) as client:
        out = client.tensor_ops({"op": "arange", "end": 5000})["out"]
    np.testing.assert_array_equal(out, np.arange(5000))
    assert recorder.last.url.params.get("encoding") == expected


def test_a_retry_sends_the_whole_body_again() -> None:
    bodies: list[bytes] = []
    array = np.arange(4096, dtype=np.float32)

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        if len(bodies) == 1:
            return httpx.Response(503, json={"error": "busy", "code": "worker_lost", "details": {}})
        head = json.dumps(
            {
                "outputs": {
                    "out": {"shape": [4096], "dtype": "float32", "binary_data_size": array.nbytes}
                },
                "device": "cpu",
                "elapsed_ms": 0.0,
            }
        ).encode()
        return httpx.Response(
            200,
            content=head + array.tobytes(),
            headers={FRAME: str(len(head)), "content-type": "application/octet-stream"},
        )

    retry = tl.Retry(total=2, backoff_factor=0, jitter=0)
    with tl.Client("http://test", transport=httpx.MockTransport(handler), retries=retry) as client:
        out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    np.testing.assert_array_equal(out, array)


def test_a_broken_binary_answer_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        head = b'{"outputs":{"out":{"shape":[4],"dtype":"float32","binary_data_size":16}}}'
        return httpx.Response(200, content=head + b"\0" * 8, headers={FRAME: str(len(head))})

    with (
        tl.Client("http://test", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(tl.ProtocolError),
    ):
        client.tensor_ops({"op": "ones", "size": [4]})


def _answer_with(header: str) -> Any:
    """A handler whose binary answer (one float32 zero) has ``header`` set to "²": a digit
    to str.isdigit, a byte of latin-1, and no length."""

    def handler(request: httpx.Request) -> httpx.Response:
        head = b'{"outputs":{"out":{"shape":[1],"dtype":"float32","binary_data_size":4}}}'
        lengths = {FRAME: str(len(head)).encode(), "content-length": str(len(head) + 4).encode()}
        lengths[header] = b"\xb2"
        return httpx.Response(
            200, content=head + b"\0" * 4, headers=[(k.encode(), v) for k, v in lengths.items()]
        )

    return handler


def test_a_frame_length_of_other_digits_is_a_protocol_error() -> None:
    with (
        tl.Client("http://test", transport=httpx.MockTransport(_answer_with(FRAME))) as client,
        pytest.raises(tl.ProtocolError),
    ):
        client.tensor_ops({"op": "ones", "size": [1]})


def test_a_content_length_of_other_digits_is_no_length() -> None:
    transport = httpx.MockTransport(_answer_with("content-length"))
    with tl.Client("http://test", transport=transport) as client:
        result = client.tensor_ops({"op": "ones", "size": [1]})
    assert result["out"].tolist() == [0.0]  # read to its end, as a chunked answer
