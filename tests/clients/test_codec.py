"""The client's shared layer without I/O: the wire codec, PNG encoding, image inputs, the
error map and the retry policy."""

from __future__ import annotations

import base64
import io
import json
import math
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torchlab_client as tl
from PIL import Image
from torchlab_client import Retry
from torchlab_client._codec import EncodeStats, decode_array, encode_tensor, to_json_values
from torchlab_client._exceptions import error_from_response, parse_retry_after
from torchlab_client._images import archive_upload, csv_upload, image_upload

from service.codec import Encoding
from service.codec import decode_tensor as service_decode
from service.codec import encode_tensor as service_encode

NUMPY_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def sample(dtype: str, shape: tuple[int, ...] = (3, 4)) -> np.ndarray:
    """Values that exercise the dtype: extremes for integers, non-finite for floats."""
    rng = np.random.default_rng(0)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind == "b":
        return rng.random(shape) > 0.5
    if np_dtype.kind in "iu":
        info = np.iinfo(np_dtype)
        values = rng.integers(info.min, info.max, size=shape, dtype=np_dtype, endpoint=True)
        values.flat[0], values.flat[-1] = info.min, info.max
        return values
    values = rng.standard_normal(shape).astype(np_dtype)
    values.flat[0], values.flat[1], values.flat[2] = np.nan, np.inf, -np.inf
    return values


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)  # NaN equals NaN here


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("threshold", [0, 1 << 20], ids=["b64", "json"])
def test_request_tensors_decode_on_the_service_exactly(dtype: str, threshold: int) -> None:
    array = sample(dtype)
    stats = EncodeStats()
    wire = json.loads(json.dumps(encode_tensor(array, threshold, stats), allow_nan=False))
    assert ("b64" in wire) == (threshold == 0) == bool(stats.b64_tensors)
    assert wire["dtype"] == dtype
    decoded = service_decode(wire, max_elements=1 << 20).numpy()
    assert_same(decoded, array)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("encoding", ["json", "b64"])
def test_response_tensors_decode_to_the_wire_dtype(dtype: str, encoding: Encoding) -> None:
    array = sample(dtype)
    wire = json.loads(service_dumps(service_encode(torch.from_numpy(array), encoding)))
    decoded, name = decode_array(wire)
    assert name == dtype
    assert_same(decoded, array)


def service_dumps(value: object) -> bytes:
    from service.codec import dumps  # noqa: PLC0415

    return dumps(value)


@pytest.mark.parametrize("encoding", ["json", "b64"])
def test_bfloat16_arrives_as_float32_and_as_bfloat16_with_torch(encoding: Encoding) -> None:
    tensor = torch.tensor([1.5, -2.25, float("nan"), float("inf"), 3.0e38], dtype=torch.bfloat16)
    wire = json.loads(service_dumps(service_encode(tensor, encoding)))
    array = tl.decode_tensor(wire)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, tensor.float().numpy())
    back = tl.decode_tensor(wire, as_torch=True)
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.float().nan_to_num(), tensor.float().nan_to_num())


@pytest.mark.parametrize("threshold", [0, 1 << 20], ids=["b64", "json"])
def test_torch_tensors_are_sent_with_their_dtype(threshold: int) -> None:
    for dtype in (torch.bfloat16, torch.float16, torch.int32, torch.bool):
        tensor = torch.arange(6).reshape(2, 3).to(dtype)
        wire = json.loads(json.dumps(encode_tensor(tensor, threshold)))
        decoded = service_decode(wire, max_elements=100)
        assert decoded.dtype == dtype
        assert torch.equal(decoded, tensor)


def test_zero_d_and_empty_tensors() -> None:
    for array in (np.array(2.5, dtype=np.float32), np.zeros((0, 3), dtype=np.int16)):
        for threshold in (0, 100):
            wire = json.loads(json.dumps(encode_tensor(array, threshold)))
            assert_same(service_decode(wire, max_elements=100).numpy(), array)
    assert_same(
        decode_array({"shape": [], "dtype": "float32", "data": "NaN"})[0],
        np.float32("nan") * np.ones((), np.float32),
    )


def test_non_finite_floats_travel_as_strings() -> None:
    values = [[1.0, math.nan], [math.inf, -math.inf]]
    assert to_json_values(values) == [[1.0, "NaN"], ["Infinity", "-Infinity"]]
    assert to_json_values({"a": np.float32("inf"), "b": (np.int64(3), None)}) == {
        "a": "Infinity",
        "b": [3, None],
    }
    wire = encode_tensor(np.array([math.nan, 1.0]), 1 << 20)
    assert wire["data"] == ["NaN", 1.0]
    json.dumps(wire, allow_nan=False)  # valid JSON, no NaN token


def test_plain_lists_keep_the_services_inference() -> None:
    # A nested list is not given a dtype, so the service infers it as torch.tensor does.
    wire = to_json_values({"x": [[1, 2], [3, 4]]}, 0, EncodeStats())
    assert wire == {"x": [[1, 2], [3, 4]]}


def test_unsupported_dtypes_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="complex"):
        encode_tensor(np.zeros(2, dtype=np.complex64), 0)
    # Issue 15: arrays keep their dtype or are refused naming it (no silent widening).
    for dtype, cast in (("uint16", "int32"), ("uint32", "int64"), ("uint64", "int64")):
        with pytest.raises(TypeError, match=rf"{dtype}.*astype\(np\.{cast}\)"):
            encode_tensor(np.zeros(2, dtype=dtype), 0)
    big_endian = np.arange(4, dtype=">f4")
    assert_same(
        service_decode(encode_tensor(big_endian, 0), max_elements=10).numpy(),
        np.arange(4, dtype=np.float32),
    )


def test_malformed_response_tensors_are_protocol_errors() -> None:
    with pytest.raises(tl.ProtocolError):
        decode_array({"shape": [2], "data": [1, 2]})
    with pytest.raises(tl.ProtocolError):
        decode_array({"shape": [3], "dtype": "float32", "data": [1.0, 2.0]})
    with pytest.raises(tl.ProtocolError):
        decode_array({"shape": [2], "dtype": "float32", "b64": base64.b64encode(b"1234").decode()})
    with pytest.raises(tl.ProtocolError):
        decode_array({"shape": [1], "dtype": "complex64", "data": [1]})


# --- pictures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "mode"),
    [
        ((5, 7), np.uint8, "L"),
        ((5, 7, 1), np.uint8, "L"),
        ((5, 7, 3), np.uint8, "RGB"),
        ((5, 7, 4), np.uint8, "RGBA"),
        ((5, 7), np.uint16, "I;16"),
    ],
)
def test_encode_png_is_read_back_by_pillow(shape: tuple[int, ...], dtype: type, mode: str) -> None:
    array: np.ndarray = (
        np.random.default_rng(1)
        .integers(0, np.iinfo(dtype).max, shape, endpoint=True)
        .astype(dtype)
    )
    with Image.open(io.BytesIO(tl.encode_png(array))) as picture:
        assert picture.mode.startswith(mode.split(";", maxsplit=1)[0])
        np.testing.assert_array_equal(np.asarray(picture).reshape(array.shape), array)


def test_encode_png_refuses_what_is_not_a_picture() -> None:
    with pytest.raises(ValueError, match="input="):
        tl.encode_png(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tl.encode_png(np.zeros((4, 4), np.float32))
    assert tl.encode_png(np.ones((2, 2), bool)).startswith(b"\x89PNG")


def test_every_image_input_uploads_the_same_pixels(tmp_path: Path) -> None:
    array = np.random.default_rng(2).integers(0, 255, (6, 9), endpoint=True).astype(np.uint8)
    png = tl.encode_png(array)
    path = tmp_path / "picture.png"
    path.write_bytes(png)
    pil = Image.fromarray(array)
    inputs: list[object] = [
        array,
        torch.from_numpy(array),
        png,
        bytearray(png),
        str(path),
        path,
        pil,
        tl.PNGImage(png),
    ]
    with path.open("rb") as file:
        inputs.append(file)
        uploads = [image_upload(value) for value in inputs]
    for value, (name, content, media_type) in zip(inputs, uploads, strict=True):
        assert media_type == "image/png", value
        assert name.endswith(".png")
        with Image.open(io.BytesIO(content)) as picture:
            np.testing.assert_array_equal(np.asarray(picture), array)
    jpeg = io.BytesIO()
    pil.save(jpeg, format="JPEG")
    assert image_upload(jpeg.getvalue())[2] == "image/jpeg"
    with pytest.raises(ValueError, match="not a PNG"):
        image_upload(b"just text")


def test_archives_and_csv_uploads(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.png").write_bytes(tl.encode_png(np.zeros((2, 2), np.uint8)))
    filename, content, media_type = archive_upload(tmp_path)
    assert filename.endswith(".zip")
    assert media_type == "application/zip"

    assert sorted(zipfile.ZipFile(io.BytesIO(content)).namelist()) == ["cat/1.png", "dog/1.png"]
    assert archive_upload(content)[1] == content
    with pytest.raises(ValueError, match="zip"):
        archive_upload(b"nope")
    assert csv_upload(b"a,b\n1,2\n") == ("data.csv", b"a,b\n1,2\n", "text/csv")


def test_png_image_result() -> None:
    png = tl.encode_png(np.zeros((3, 5), np.uint8))
    picture = tl.PNGImage(png, {"x-panel-count": "1"})
    assert (picture.width, picture.height) == (5, 3)
    assert picture._repr_png_() == png
    assert picture.to_pil().size == (5, 3)
    with pytest.raises(tl.ProtocolError):
        tl.PNGImage(b"<html>")


# --- the error map ---------------------------------------------------------------------------


def answer(
    status: int,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    details: dict[str, object] | None = None,
) -> httpx.Response:
    details = {"limit": "max_elements"} if details is None else details
    body = {"error": f"a {code}", "code": code, "details": details} if code else None
    return httpx.Response(
        status,
        json=body,
        headers={"X-Request-ID": "abc", **(headers or {})},
        request=httpx.Request("POST", "http://testserver/tensor/ops"),
    )


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (400, "malformed_body", tl.ValidationError),
        (401, "unauthorized", tl.UnauthorizedError),
        (404, "not_found", tl.NotFoundError),
        (413, "elements_limit", tl.TooLargeError),
        (413, "body_size_limit", tl.TooLargeError),
        (413, "flops_limit", tl.TooLargeError),
        (413, "image_pixels_limit", tl.TooLargeError),
        (415, "unsupported_media_type", tl.ValidationError),
        (422, "validation_error", tl.ValidationError),
        (422, "invalid_tensor", tl.ValidationError),
        (422, "shape_mismatch", tl.ValidationError),
        (422, "device_unavailable", tl.DeviceUnavailableError),
        (408, "body_timeout", tl.BodyTimeoutError),
        (429, "too_many_requests", tl.RateLimitedError),
        (500, "internal_error", tl.ServerError),
        (503, "device_out_of_memory", tl.DeviceOutOfMemoryError),
        (504, "timeout", tl.ComputeTimeoutError),
        (502, None, tl.ServerError),
        (418, None, tl.ValidationError),
    ],
)
def test_errors_map_to_their_family(status: int, code: str | None, family: type) -> None:
    error = error_from_response(answer(status, code))
    assert type(error) is family
    assert isinstance(error, tl.APIError)
    assert isinstance(error, tl.TorchlabError)
    assert error.status_code == status
    assert error.code == (code or f"http_{status}")
    assert error.request_id == "abc"
    if code:
        assert error.message == f"a {code}"
        assert error.details == {"limit": "max_elements"}
    if family is tl.TooLargeError:
        assert error.limit == "max_elements"  # type: ignore[attr-defined]


def test_rate_limited_error_reads_retry_after() -> None:
    error = error_from_response(answer(429, "too_many_requests", {"Retry-After": "3"}))
    assert isinstance(error, tl.RateLimitedError)
    assert error.retry_after == 3.0


def test_non_contract_error_bodies_keep_their_text() -> None:
    response = httpx.Response(
        502, text="<h1>Bad gateway</h1>", request=httpx.Request("GET", "http://x/")
    )
    error = error_from_response(response)
    assert isinstance(error, tl.ServerError)
    assert "Bad gateway" in error.message


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(later) or 0) <= 30


def test_retry_policy() -> None:
    retry = Retry(total=3, backoff_factor=0.5, max_backoff=1.5, jitter=0)
    assert [retry.backoff(n) for n in range(4)] == [0.5, 1.0, 1.5, 1.5]
    busy = error_from_response(answer(429, "too_many_requests", {"Retry-After": "2"}))
    assert retry.after_response(busy, 0) == 2.0
    assert retry.after_response(busy, 3) is None  # out of tries
    oom = error_from_response(answer(503, "device_out_of_memory", details={}))
    assert retry.after_response(oom, 1) == 1.0
    at_its_limit = {"limit": "worker_max_memory_bytes", "allowed": 1 << 30}
    over = error_from_response(answer(503, "device_out_of_memory", details=at_its_limit))
    assert retry.after_response(over, 0) is None  # the same request would reach it again
    lost = error_from_response(answer(503, "worker_lost", details={"exitcode": -9}))
    assert retry.after_response(lost, 0) == 0.5
    for status, code in ((422, "validation_error"), (413, "elements_limit"), (504, "timeout")):
        assert retry.after_response(error_from_response(answer(status, code)), 0) is None
    too_long = error_from_response(answer(429, "too_many_requests", {"Retry-After": "3600"}))
    assert retry.after_response(too_long, 0) is None
    request = httpx.Request("GET", "http://x/")
    assert retry.after_exception(httpx.ConnectError("refused", request=request), 0) == 0.5
    assert retry.after_exception(httpx.ReadTimeout("slow", request=request), 0) is None
    jittery = Retry(backoff_factor=1.0, jitter=0.5)
    assert all(1.0 <= jittery.backoff(0) <= 1.5 for _ in range(20))
