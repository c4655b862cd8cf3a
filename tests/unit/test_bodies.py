"""Large bodies read by a worker: what comes back decodes to exactly what the body said."""

from __future__ import annotations

import asyncio
import gc
import math
import time

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from schemas.tensors import TensorOpsRequest
from schemas.v2 import InferenceRequest
from service import errors
from service.api import binary, bodies
from service.api.binary import Blob, SharedBuffers
from service.api.bodies import (
    BodyJob,
    BodyResult,
    compact_body,
    many_values,
    model_path,
    place_tensors,
)
from service.api.jsonarrays import loads_arrays
from service.codec import decode_tensor, encode_tensor, loads_json
from service.errors import LimitExceeded, ServiceError, TensorDecodeError
from service.limits import Deadline
from service.main import create_app
from tests.conftest import make_settings

MODEL = model_path(TensorOpsRequest)
JSON = {"content-type": "application/json"}


def read(raw: bytes, max_elements: int = 100, tensors_out: bool = True) -> BodyResult:
    return compact_body(BodyJob(Blob(raw), MODEL, max_elements, tensors_out), Deadline(30))


def compact(body: object, max_elements: int = 1 << 24) -> bytes:
    """The body as a binary request's JSON part comes back: large tensors in base64."""
    result = read(orjson.dumps(body), max_elements, tensors_out=False)
    assert result.body is not None and not result.tensors, result
    return bytes(result.body.view())


TENSORS = pytest.mark.parametrize(
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


@TENSORS
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


@TENSORS
def test_large_tensors_come_back_decoded_with_their_places(tensor: object) -> None:
    body = {"inputs": {"a": tensor}, "steps": [{"op": "add", "x": "a", "y": tensor}]}
    result = read(orjson.dumps(body), 1 << 24)
    assert result.body is not None
    text = orjson.loads(bytes(result.body.view()))
    assert text == {"inputs": {"a": None}, "steps": [{"op": "add", "x": "a", "y": None}]}
    assert [path for path, _ in result.tensors] == [("inputs", "a"), ("steps", 0, "y")]
    expected = decode_tensor(tensor, max_elements=1 << 24)
    place_tensors(text, result.tensors)
    for value in (text["inputs"]["a"], text["steps"][0]["y"]):
        got = decode_tensor(value, max_elements=1 << 24)  # the form a binary tensor takes
        assert got.dtype == expected.dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    TensorOpsRequest.model_validate(text)


def test_a_large_base64_tensor_comes_back_decoded_and_a_small_one_as_it_is() -> None:
    large = encode_tensor(torch.arange(5000, dtype=torch.float64), "b64")
    small = encode_tensor(torch.arange(3, dtype=torch.int16), "b64")
    body = {"inputs": {"a": large, "b": small}, "steps": [{"op": "clone", "x": "a"}]}
    result = read(orjson.dumps(body), 1 << 24)
    assert result.body is not None
    assert orjson.loads(bytes(result.body.view()))["inputs"] == {"a": None, "b": small}
    [(path, tensor)] = result.tensors
    assert path == ("inputs", "a")
    torch.testing.assert_close(tensor, torch.arange(5000, dtype=torch.float64), rtol=0, atol=0)


def test_small_tensors_and_other_fields_are_left_as_they_are() -> None:
    body = {"inputs": {"a": [1, 2, 3]}, "steps": [{"op": "reshape", "x": "a", "shape": [3, 1]}]}
    assert orjson.loads(compact(body)) == body


def test_a_body_without_tensors_comes_back_as_nothing_to_change() -> None:
    result = read(orjson.dumps({"steps": [{"op": "arange", "end": 3}]}))
    assert result == BodyResult()  # the server keeps the body it sent


def test_a_body_that_is_not_json_comes_back_as_its_error() -> None:
    result = read(b'{"steps": [')
    assert result.body is None and result.json_error is not None


def test_an_invalid_body_comes_back_as_its_validation_errors_with_keys_clipped() -> None:
    raw = orjson.dumps({"steps": [], "k" * 100_000: 1})
    result = read(raw)
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
        # Few values (one long base64 string): read in a thread of the server, same answer.
        packed = {**body, "inputs": {"a": encode_tensor(torch.tensor(values), "b64")}}
        packed_body = orjson.dumps(packed)
        assert len(packed_body) > 1 << 20 and not many_values(packed_body)
        response = client.post("/tensor/ops", content=packed_body, headers=JSON)
        assert response.status_code == 200, response.text
        assert math.isclose(response.json()["outputs"]["s"]["data"], values.sum(), rel_tol=1e-12)
        ragged = {**body, "inputs": {"a": [[1.0, 2.0]] * 80_000 + [[1.0]]}}
        error = client.post("/tensor/ops", json=ragged).json()
        assert error["code"] == "ragged_tensor" or error["code"] == "invalid_tensor"
        assert "inputs.a" in error["error"]


@pytest.mark.parametrize(
    ("raw", "many"),
    [
        (b"[" + b"1," * 70_000 + b"1]", True),  # tiny values: a worker reads it
        (b'"' + b"\\u0041" * 70_000 + b'"', True),  # escapes, each decoded one by one
        (b'{"b64": "' + b"A" * 5_000_000 + b'"}', False),  # a long string: parsed in a thread
        (b"[" + b"1," * 1_000 + b"1]" + b" " * 2_000_000, False),
        (b'{"' + b"k" * 9_000_000 + b'": 1}', True),  # over 8 MiB, whatever it holds
    ],
    ids=["values", "escapes", "base64", "whitespace", "huge-key"],
)
def test_a_large_body_goes_to_a_worker_by_its_values_not_its_bytes(raw: bytes, many: bool) -> None:
    assert many_values(raw) is many
    assert many_values(memoryview(raw)) is many


MATRIX = np.arange(4096, dtype=np.float64).reshape(64, 64).tolist()


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": {"a": MATRIX}, "steps": [{"op": "add", "x": "a", "y": MATRIX}]},
        {"inputs": {"a": {"data": MATRIX, "dtype": "int16"}}, "steps": []},
        {"inputs": {"a": {"data": MATRIX, "dtype": "uint8"}}, "steps": [{"op": "clone"}]},
        {"inputs": {"a": {"data": MATRIX, "shape": [4096, 2]}}, "steps": [{"op": "clone"}]},
        {"inputs": {"a": MATRIX}, "steps": [{"op": "reshape", "x": "a", "shape": [1] * 2000}]},
        {"inputs": {"a": MATRIX}, "steps": [{"op": "clone", "x": "a", "junk": MATRIX}]},
        {"steps": [{"op": "randn", "size": list(range(2000))}]},
    ],
    ids=["tensors", "dtype", "out-of-range", "shape-mismatch", "long-shape", "extra", "size"],
)
def test_a_body_read_by_simdjson_comes_back_as_one_read_by_orjson(
    body: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = orjson.dumps(body)
    assert loads_arrays(raw) is not None and loads_arrays(raw)[1] > 0

    def outcome() -> object:
        try:
            result = read(raw, 1 << 24)
        except (TensorDecodeError, LimitExceeded) as exc:
            return type(exc), str(exc), exc.details
        return (
            None if result.body is None else bytes(result.body.view()),
            [(path, tensor.dtype, tensor.tolist()) for path, tensor in result.tensors],
            result.json_error,
            result.errors,
        )

    fast = outcome()
    monkeypatch.setattr("service.api.bodies.loads_arrays", lambda raw: None)
    assert fast == outcome()


def test_a_valid_body_of_large_lists_is_read_once_by_simdjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(raw: object) -> None:
        raise AssertionError("read again by orjson")

    monkeypatch.setattr("service.api.bodies.loads_json", refused)
    body = {"inputs": {"a": MATRIX}, "steps": [{"op": "add", "x": "a", "y": MATRIX}]}
    result = read(orjson.dumps(body), 1 << 24)
    assert [path for path, _ in result.tensors] == [("inputs", "a"), ("steps", 0, "y")]
    torch.testing.assert_close(result.tensors[1][1], torch.tensor(MATRIX), rtol=0, atol=0)


def test_an_inference_requests_inputs_are_decoded_with_their_shape_and_datatype() -> None:
    values = np.linspace(-1, 1, 3000)
    body = {
        "inputs": [
            {"name": "input", "shape": [1000, 3], "datatype": "FP64", "data": values.tolist()},
            {"name": "small", "shape": [2], "datatype": "INT8", "data": [1, 2]},
        ]
    }
    job = BodyJob(Blob(orjson.dumps(body)), model_path(InferenceRequest), 1 << 24)
    result = compact_body(job, Deadline(30))
    assert result.body is not None
    text = orjson.loads(bytes(result.body.view()))
    assert text["inputs"][0]["data"] is None and text["inputs"][1] == body["inputs"][1]
    [(path, tensor)] = result.tensors
    assert path == ("inputs", 0, "data")
    expected = decode_tensor(
        {"data": body["inputs"][0]["data"], "shape": [1000, 3], "dtype": "FP64"},
        max_elements=1 << 24,
    )
    torch.testing.assert_close(tensor, expected, rtol=0, atol=0)
    for change, error in [
        ({"datatype": "BYTES"}, "BYTES"),
        ({"shape": [7]}, "inputs.input"),
    ]:
        bad = {"inputs": [{**body["inputs"][0], **change}]}
        job = BodyJob(Blob(orjson.dumps(bad)), model_path(InferenceRequest), 1 << 24)
        with pytest.raises(ServiceError, match=error):
            compact_body(job, Deadline(30))


def test_lists_and_objects_are_counted_before_the_body_is_parsed() -> None:
    rows = np.arange(3000, dtype=np.float64).reshape(1000, 3).tolist()  # 1,001 lists
    steps = [{"op": "clone", "x": "a"}]  # 2 objects, with the body's and inputs' 4 in all
    raw = orjson.dumps({"inputs": {"a": rows}, "steps": steps})
    job = BodyJob(Blob(raw), MODEL, 1 << 24, max_lists=1005)
    (path, tensor), *_ = compact_body(job, Deadline(30)).tensors
    assert path == ("inputs", "a") and torch.equal(tensor, torch.tensor(rows))
    with pytest.raises(LimitExceeded) as info:
        compact_body(BodyJob(Blob(raw), MODEL, 1 << 24, max_lists=1004), Deadline(30))
    assert info.value.code == "body_lists_limit"
    assert info.value.details == {"limit": "max_body_lists", "allowed": 1004, "requested": 1005}
    assert "base64" in info.value.message


def test_a_body_of_empty_rows_is_refused_before_any_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 2M empty rows: no elements, but each would be a list object of its own.
    raw = b'{"inputs": {"a": [' + b",".join([b"[]"] * 2_000_000) + b']}, "steps": []}'
    parsed: list[int] = []
    monkeypatch.setattr(bodies, "loads_json", lambda text: parsed.append(1))
    monkeypatch.setattr(bodies, "loads_arrays", lambda text: parsed.append(1))
    with pytest.raises(LimitExceeded) as info:
        compact_body(BodyJob(Blob(raw), MODEL, 1 << 24, max_lists=1 << 20), Deadline(30))
    assert info.value.details["requested"] == 2_000_004  # the rows, a, the body, inputs, steps
    assert parsed == []


def test_over_http_a_tensor_of_too_many_rows_is_413_and_goes_as_base64() -> None:
    rows = np.full((200_000, 1), 0.5)
    as_lists = {"inputs": {"a": rows.tolist()}, "steps": [{"op": "sum", "x": "a"}]}
    as_b64 = {**as_lists, "inputs": {"a": encode_tensor(torch.from_numpy(rows), "b64")}}
    with TestClient(create_app(make_settings(max_body_lists=1 << 16))) as client:
        assert len(orjson.dumps(as_lists)) > 1 << 20  # read by a worker process
        response = client.post("/tensor/ops", json=as_lists)
        assert response.status_code == 413, response.text
        payload = response.json()
        assert payload["code"] == "body_lists_limit"
        assert payload["details"] == {
            "limit": "max_body_lists",
            "allowed": 1 << 16,
            "requested": 200_005,  # the rows, a, the body, inputs, steps, the step
        }
        response = client.post("/tensor/ops", json=as_b64)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["out"]["data"] == float(rows.sum())
        assert client.get("/health").status_code == 200


def test_a_body_its_worker_refused_is_freed_with_the_answer_not_by_the_collector() -> None:
    # The refusal was kept in the request's scope with its traceback, whose frames hold the
    # request: a cycle that kept the body (and its copy in shared memory) until the cyclic
    # collector ran; a 57 MB body held 114 MB, request after request.
    body = {"inputs": {"a": np.full((200_000, 1), 0.5).tolist()}, "steps": [{"op": "sum"}]}
    with TestClient(create_app(make_settings(max_body_lists=1 << 16))) as client:
        gc.collect()
        gc.disable()
        try:
            response = client.post("/tensor/ops", json=body)
            left = [o for o in gc.get_objects() if isinstance(o, LimitExceeded)]
        finally:
            gc.enable()
    assert response.status_code == 413, response.text
    assert left == []


def test_a_request_that_fails_unexpectedly_is_freed_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 500's traceback holds every frame the error passed through, the request and its
    # tensors among them, in cycles only the collector frees (16 MB held per request of 16).
    def broken(*args: object) -> torch.Tensor:
        raise RuntimeError("a bug")

    monkeypatch.setattr(binary, "tensor_view", broken)
    # pytest's log capture keeps each record, and with it the error's traceback and frames.
    monkeypatch.setattr(errors.logger, "propagate", False)
    n = 1 << 19
    head = orjson.dumps(
        {
            "inputs": {"a": {"shape": [n], "dtype": "float32", "binary_data_size": 4 * n}},
            "steps": [{"op": "sum", "x": "a"}],
        }
    )
    frame = {"Inference-Header-Content-Length": str(len(head))}
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        gc.collect()
        gc.disable()
        try:
            for _ in range(2):
                response = client.post("/tensor/ops", content=head + bytes(4 * n), headers=frame)
                assert response.status_code == 500, response.text
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            held = [o for o in gc.garbage if isinstance(o, torch.Tensor) and o.numel() >= n]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert response.json()["code"] == "internal_error"
    assert held == []


def test_a_body_past_doubles_that_is_not_json_is_freed_with_its_error() -> None:
    raw = b'{"x": 1e400, "y": NaN}'  # refused by orjson, then by the standard library
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(orjson.JSONDecodeError):
            loads_json(raw)
        left = [o for o in gc.get_objects() if isinstance(o, orjson.JSONDecodeError)]
    finally:
        gc.enable()
    assert left == []


def test_values_outside_the_tensors_are_bounded_before_the_server_reads_them() -> None:
    tensor = np.arange(5000, dtype=np.float64).tolist()  # its values are not counted
    steps = [{"op": "clone", "x": "a"}] * 100
    raw = orjson.dumps({"inputs": {"a": tensor}, "steps": steps})
    job = BodyJob(Blob(raw), MODEL, 1 << 24, max_values=1024)
    assert [path for path, _ in compact_body(job, Deadline(30)).tensors] == [("inputs", "a")]
    many = orjson.dumps({"inputs": {"a": tensor}, "steps": steps * 10})
    with pytest.raises(LimitExceeded) as info:
        compact_body(BodyJob(Blob(many), MODEL, 1 << 24, max_values=1024), Deadline(30))
    assert info.value.code == "body_values_limit" and info.value.details["allowed"] == 1024


def test_large_bodies_in_a_row_use_one_shared_buffer_again_and_are_each_read_right() -> None:
    # Each body is copied into shared memory for its worker: into one of the buffers of
    # binary bodies, used again (a fresh one costs a page fault per page), never with the
    # last body's bytes read for this one's.
    with TestClient(create_app(make_settings())) as client:
        for shift in (0, 7, 3):  # bodies of one length (seven digits a value), other sums
            values = (np.arange(300_000, dtype=np.int64) + 1_000_000 + shift).tolist()
            body = {"inputs": {"a": values}, "steps": [{"op": "sum", "x": "a"}]}
            raw = orjson.dumps(body)
            assert len(raw) > 1 << 20 and many_values(raw)  # read by a worker process
            response = client.post("/tensor/ops", content=raw, headers=JSON)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"]["out"]["data"] == sum(values)
        pool = client.app.state.shared_buffers  # type: ignore[attr-defined]
        sizes = [storage.nbytes() for storage in pool._storages]
    assert len(sizes) == 1 and sizes[0] >= len(raw)


def test_the_shared_buffers_go_back_once_no_large_body_has_come_for_a_while() -> None:
    async def kept_until(pool: SharedBuffers, nbytes: int) -> float:
        """When (``time.monotonic()``) the pool came to keep ``nbytes``."""
        start = time.monotonic()
        while pool.kept_bytes != nbytes and time.monotonic() - start < 5:
            await asyncio.sleep(0.01)
        return time.monotonic()

    async def scenario() -> None:
        pool = SharedBuffers(idle_s=0.1)
        taken = time.monotonic()  # the idle time counts from the takes, not from after them
        held = pool.take(3 << 20)  # a body still in use
        pool.take(5 << 20)  # one whose tensors are gone
        assert pool.kept_bytes == (4 << 20) + (8 << 20)  # powers of two
        assert await kept_until(pool, 4 << 20) - taken >= 0.09  # idle: the free one gone
        await asyncio.sleep(0.2)
        assert pool.kept_bytes == 4 << 20  # the one in use kept
        del held
        await kept_until(pool, 0)  # and let go once free
        assert pool.kept_bytes == 0

    asyncio.run(scenario())


def test_the_shared_buffers_go_back_when_taken_on_another_event_loop_too() -> None:
    # An app served again (a test client opened anew) takes its buffers on a new loop.
    pool = SharedBuffers(idle_s=0.05)

    async def take_and_wait() -> int:
        pool.take(3 << 20)
        await asyncio.sleep(0.3)
        return pool.kept_bytes

    async def take_and_leave() -> None:
        pool.take(3 << 20)

    asyncio.run(take_and_leave())  # its loop ends with the timer pending
    assert pool.kept_bytes == 4 << 20
    assert asyncio.run(take_and_wait()) == 0
