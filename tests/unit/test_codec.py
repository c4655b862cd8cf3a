"""Tests for the wire tensor codec in :mod:`service.codec` (API.md §2 and §3).

Every reference value is computed here with torch or numpy: round trips compare against the
tensor they started from, inference against ``torch.tensor`` itself, raw bytes against
numpy's little-endian bytes.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.codec import (
    DTYPES,
    MAX_DIMS,
    OIP_ALIASES,
    check_extent,
    decode_tensor,
    dumps,
    encode_tensor,
    estimate_encoded_bytes,
    loads_json,
    parse_dtype,
)
from service.errors import ErrorCode, LimitExceeded, TensorDecodeError

LIMIT = 1 << 20
NAMES = list(DTYPES)
ALIAS_OF = {name: alias for alias, name in OIP_ALIASES.items()}
FLOATS = {"float16", "bfloat16", "float32", "float64"}
INTS = {"uint8", "int8", "int16", "int32", "int64"}
NON_FINITE = {"NaN", "Infinity", "-Infinity"}
BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
RAW_NUMPY = {
    "bool": "|b1",
    "uint8": "|u1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "float16": "<f2",
    "bfloat16": "<u2",  # raw 16 bits
    "float32": "<f4",
    "float64": "<f8",
}

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(value: object, max_elements: int = LIMIT) -> torch.Tensor:
    return decode_tensor(value, max_elements=max_elements)


def wire(value: object) -> Any:
    """What the server sees after JSON: orjson out and back (no Python NaN can survive)."""
    return orjson.loads(orjson.dumps(value))


def to_wire_values(values: Any) -> Any:
    """Python floats NaN/±inf -> the contract's strings, recursively."""
    if isinstance(values, list):
        return [to_wire_values(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        if math.isnan(values):
            return "NaN"
        return "Infinity" if values > 0 else "-Infinity"
    return values


def from_wire_values(values: Any) -> Any:
    if isinstance(values, list):
        return [from_wire_values(v) for v in values]
    if isinstance(values, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[values]
    return values


def raw_bytes(tensor: torch.Tensor, name: str) -> bytes:
    """Little-endian C-order bytes, computed independently of the codec."""
    if name == "bfloat16":
        return tensor.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    return tensor.contiguous().numpy().astype(RAW_NUMPY[name]).tobytes()


def assert_same(got: torch.Tensor, expected: torch.Tensor, *, bitwise_nan: bool = False) -> None:
    """Same dtype, shape and values; floats compared bit for bit (so -0.0 != 0.0), NaNs by
    position (or bit for bit, payload and sign included, when ``bitwise_nan``)."""
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.device.type == "cpu"
    if expected.dtype in BITS:
        bits = BITS[expected.dtype]
        if bitwise_nan:
            assert torch.equal(got.view(bits), expected.view(bits))
            return
        nan = torch.isnan(expected)
        assert torch.equal(torch.isnan(got), nan)
        assert torch.equal(got[~nan].view(bits), expected[~nan].view(bits))
        torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    else:
        assert torch.equal(got, expected)


# --- strategies --------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4)


def values_for(name: str, count: int, *, finite: bool = False) -> st.SearchStrategy[list[Any]]:
    if name == "bool":
        element: st.SearchStrategy[Any] = st.booleans()
    elif name in INTS:
        info = torch.iinfo(DTYPES[name])
        element = st.integers(info.min, info.max)
    else:
        width = {"float16": 16, "float64": 64}.get(name, 32)
        element = st.floats(width=width, allow_nan=not finite, allow_infinity=not finite)
    return st.lists(element, min_size=count, max_size=count)


@st.composite
def tensors(draw: st.DrawFn, names: list[str] = NAMES, finite: bool = False) -> torch.Tensor:
    name = draw(st.sampled_from(names))
    shape = draw(shapes)
    values = draw(values_for(name, math.prod(shape), finite=finite))
    if name == "bfloat16":
        # bfloat16 values: float32 numbers rounded, as a client would produce them.
        tensor = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)
    else:
        tensor = torch.tensor(values, dtype=DTYPES[name])
    return tensor.reshape(shape)


def dtype_key(draw: st.DrawFn, name: str) -> dict[str, str]:
    """``dtype`` or ``datatype``, with the torch name or the OIP alias."""
    key = draw(st.sampled_from(["dtype", "datatype"]))
    return {key: draw(st.sampled_from([name, ALIAS_OF[name]]))}


# --- parse_dtype --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parse_dtype_torch_names(name: str) -> None:
    assert parse_dtype(name) == getattr(torch, name)


@pytest.mark.parametrize(("alias", "name"), sorted(OIP_ALIASES.items()))
def test_parse_dtype_oip_aliases(alias: str, name: str) -> None:
    assert parse_dtype(alias) == getattr(torch, name)


def test_every_dtype_has_an_alias() -> None:
    assert set(OIP_ALIASES.values()) == set(NAMES)
    assert set(ALIAS_OF.values()) == {
        "BOOL",
        "UINT8",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "BF16",
        "FP32",
        "FP64",
    }


@pytest.mark.parametrize(
    "bad", ["float", "Float32", "fp32", "torch.float32", "complex64", "uint16", "", None, 5, []]
)
def test_parse_dtype_refuses_unknown(bad: object) -> None:
    with pytest.raises(TensorDecodeError) as info:
        parse_dtype(bad, "x.dtype")
    assert info.value.code == "invalid_dtype"
    assert info.value.status_code == 422
    assert info.value.message.startswith("x.dtype")
    assert "float32" in info.value.details["allowed"]
    assert "FP32" in info.value.details["allowed"]


# --- round trips ---------------------------------------------------------------------------------


def check_json_output(tensor: torch.Tensor, name: str) -> None:
    """encode (json) -> dumps -> loads: header, non-finite strings, values, decode again."""
    body = orjson.loads(dumps(encode_tensor(tensor)))
    assert set(body) == {"shape", "dtype", "data"}
    assert body["shape"] == list(tensor.shape)
    assert body["dtype"] == name
    data = body["data"]
    if tensor.dim() == 0:
        assert not isinstance(data, list)
    elif tensor.numel():
        assert np.shape(np.array(data, dtype=object)) == tuple(tensor.shape)
    flat = np.array(data, dtype=object).reshape(-1).tolist() if tensor.numel() else []
    expected = tensor.float() if name == "bfloat16" else tensor
    for got, want in zip(flat, expected.reshape(-1).tolist(), strict=True):
        if name == "bool":
            assert got is want
        elif name in INTS:
            assert type(got) is int
            assert got == want
        elif math.isnan(want):
            assert got == "NaN"
        elif math.isinf(want):
            assert got == ("Infinity" if want > 0 else "-Infinity")
        else:
            assert isinstance(got, float)
            # The JSON number is the value: as float32 for bfloat16, else in the dtype itself.
            as_dtype = torch.float32 if name == "bfloat16" else DTYPES[name]
            assert torch.tensor(got, dtype=torch.float64).to(as_dtype).item() == want
    assert_same(decode(body), tensor)


def check_b64_output(tensor: torch.Tensor, name: str) -> None:
    body = orjson.loads(dumps(encode_tensor(tensor, "b64")))
    assert set(body) == {"shape", "dtype", "b64"}
    assert body["shape"] == list(tensor.shape)
    assert body["dtype"] == name
    assert base64.b64decode(body["b64"], validate=True) == raw_bytes(tensor, name)
    assert_same(decode(body), tensor, bitwise_nan=True)


@pytest.mark.parametrize("name", NAMES)
@EXAMPLES
@given(data=st.data())
def test_round_trip_every_form_and_encoding(name: str, data: st.DataObject) -> None:
    tensor = data.draw(tensors([name]))
    nested = to_wire_values(tensor.tolist())
    flat = to_wire_values(tensor.reshape(-1).tolist())
    shape = list(tensor.shape)

    # 1. nested list, dtype inferred exactly as torch.tensor infers it
    inferred = decode(wire(nested))
    assert_same(inferred, torch.tensor(from_wire_values(wire(nested))))
    # 2. {"data": nested, "dtype"} and 3. {"data": flat, "shape", "dtype"}
    # (a nested list cannot say [0, 0] from [0]: the shape is torch.tensor's for that list)
    nested_shape = inferred.shape
    assert_same(
        decode(wire({"data": nested, **dtype_key(data.draw, name)})), tensor.reshape(nested_shape)
    )
    assert_same(decode(wire({"data": flat, "shape": shape, **dtype_key(data.draw, name)})), tensor)
    # 4. {"b64", "shape", "dtype"}: bit for bit, NaN payloads included
    b64 = base64.b64encode(raw_bytes(tensor, name)).decode()
    decoded = decode(wire({"b64": b64, "shape": shape, **dtype_key(data.draw, name)}))
    assert_same(decoded, tensor, bitwise_nan=True)
    assert decoded.is_contiguous()

    check_json_output(tensor, name)
    check_b64_output(tensor, name)


@EXAMPLES
@given(tensor=tensors(["bool", "int64", "float32"]).filter(lambda t: t.numel() > 0))
def test_nested_inference_keeps_the_natural_dtypes(tensor: torch.Tensor) -> None:
    """bool, int64 and float32 are what torch.tensor infers: the nested form is lossless
    (for a non-empty tensor: an empty list is float32 of shape [0], as for torch)."""
    assert_same(decode(wire(to_wire_values(tensor.tolist()))), tensor)


@pytest.mark.parametrize("name", NAMES)
def test_zero_d_tensors(name: str) -> None:
    """0-d in every form: a bare number, {"data": number, "shape": []}, b64 of one item."""
    value = {"bool": True, **dict.fromkeys(INTS, 7), **dict.fromkeys(FLOATS, -2.5)}[name]
    tensor = torch.tensor(value, dtype=DTYPES[name])
    assert tensor.dim() == 0
    assert_same(decode({"data": value, "dtype": name}), tensor)
    assert_same(decode({"data": value, "shape": [], "dtype": name}), tensor)
    assert_same(decode({"data": [value], "shape": [], "dtype": name}), tensor)
    b64 = base64.b64encode(raw_bytes(tensor, name)).decode()
    assert_same(decode({"b64": b64, "shape": [], "dtype": name}), tensor)
    body = orjson.loads(dumps(encode_tensor(tensor)))
    assert body["shape"] == []
    assert body["data"] == value  # a bare number, not a list
    assert_same(decode(body), tensor)


@pytest.mark.parametrize("value", [5, 2.5, True, "NaN", "-Infinity"])
def test_nested_scalar_is_zero_d_like_torch_tensor(value: object) -> None:
    expected = torch.tensor(from_wire_values(value))
    got = decode(value)
    assert got.dim() == 0
    assert_same(got, expected)


@pytest.mark.parametrize(
    "shape", [[0], [0, 3], [3, 0], [2, 0, 4], [0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [2] * 8]
)
@pytest.mark.parametrize("name", ["bool", "int16", "bfloat16", "float64"])
def test_edge_shapes(shape: list[int], name: str) -> None:
    tensor = torch.zeros(shape, dtype=DTYPES[name])
    b64 = base64.b64encode(raw_bytes(tensor, name)).decode()
    assert_same(decode({"b64": b64, "shape": shape, "dtype": name}), tensor)
    flat = tensor.reshape(-1).tolist()
    assert_same(decode({"data": flat, "shape": shape, "dtype": name}), tensor)
    for encoding in ("json", "b64"):
        body = orjson.loads(dumps(encode_tensor(tensor, encoding)))  # type: ignore[arg-type]
        assert_same(decode(body), tensor)


# --- non-finite floats --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FLOATS))
def test_non_finite_floats_are_strings_both_ways(name: str) -> None:
    values = [math.nan, math.inf, -math.inf, 1.5, -0.0]
    tensor = torch.tensor(values, dtype=DTYPES[name])
    body = orjson.loads(dumps(encode_tensor(tensor)))
    assert body["data"][:3] == ["NaN", "Infinity", "-Infinity"]
    assert body["data"][3] == 1.5
    assert math.copysign(1.0, body["data"][4]) == -1.0
    assert_same(decode(body), tensor)
    # ... and accepted on input, in every data form
    strings = ["NaN", "Infinity", "-Infinity", 1.5, -0.0]
    assert_same(decode({"data": strings, "dtype": name}), tensor)
    assert_same(decode({"data": strings, "shape": [5], "dtype": name}), tensor)
    assert_same(decode({"data": [strings], "shape": [5], "dtype": name}), tensor)


def test_non_finite_0d_and_nested() -> None:
    tensor = torch.tensor([[math.nan, 1.0], [-math.inf, math.inf]])
    body = orjson.loads(dumps(encode_tensor(tensor)))
    assert body["data"] == [["NaN", 1.0], ["-Infinity", "Infinity"]]
    zero_d = orjson.loads(dumps(encode_tensor(torch.tensor(math.inf, dtype=torch.float64))))
    assert zero_d == {"shape": [], "dtype": "float64", "data": "Infinity"}


def test_strings_make_nested_data_float32_like_a_nan_would() -> None:
    """["NaN", 1] is [nan, 1] for torch.tensor: float32 (ints and bools join the floats)."""
    for data in (["NaN", 1], ["Infinity", True], [["-Infinity"], [2]]):
        assert_same(decode(data), torch.tensor(from_wire_values(data)))


def test_nan_bit_patterns_travel_in_b64_only() -> None:
    """A negative NaN with a payload: b64 keeps its bits, JSON says "NaN"."""
    bits = torch.tensor([0xFFC00001 - 2**32, 0x7F800001], dtype=torch.int32)
    tensor = bits.view(torch.float32)
    assert torch.isnan(tensor).all()
    b64_body = encode_tensor(tensor, "b64")
    assert_same(decode(b64_body), tensor, bitwise_nan=True)
    json_body = orjson.loads(dumps(encode_tensor(tensor)))
    assert json_body["data"] == ["NaN", "NaN"]


# --- bfloat16 ---------------------------------------------------------------------------------


def test_bfloat16_json_values_are_float32_numbers() -> None:
    tensor = torch.tensor([0.1, 1 / 3, 3e38, -7.0], dtype=torch.float32).to(torch.bfloat16)
    body = orjson.loads(dumps(encode_tensor(tensor)))
    assert body["dtype"] == "bfloat16"
    # each number reads back as the float32 value (orjson writes float32's shortest form)
    assert [np.float32(v).item() for v in body["data"]] == tensor.float().tolist()
    assert_same(decode(body), tensor)


def test_bfloat16_b64_is_its_raw_16_bits() -> None:
    tensor = torch.tensor([1.0, -2.0, 0.1], dtype=torch.float32).to(torch.bfloat16)
    body = encode_tensor(tensor, "b64")
    raw = base64.b64decode(body["b64"])
    assert len(raw) == 2 * tensor.numel()
    # bfloat16 is the top half of a float32: the little-endian u16 equals float32 bits >> 16
    top = (tensor.float().view(torch.int32).numpy().astype("<u4") >> 16).astype("<u2")
    assert raw == top.tobytes()
    assert_same(decode(body), tensor, bitwise_nan=True)


def test_bfloat16_json_input_rounds_like_torch() -> None:
    values = [0.1, 1 / 3, 1e30, 65504.0]
    expected = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)
    assert_same(decode({"data": values, "dtype": "BF16"}), expected)


# --- dtype handling on input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],
        [1.0, 2],
        [True, False],
        [True, 1],
        [1, 2.5, True],
        [[True], [2]],
        [],
        [[]],
        [[], []],
        [[[0.5]]],
        [-(2**63), 2**63 - 1],
    ],
)
def test_nested_inference_is_torch_tensors(data: list[Any]) -> None:
    assert_same(decode(data), torch.tensor(data))


@pytest.mark.parametrize("key", ["dtype", "datatype"])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_key_and_alias_cast_like_torch(key: str, name: str) -> None:
    data = [[0, 1], [1, 0]] if name == "bool" else [[1.0, 2.0], [3.0, 4.0]]
    expected = torch.tensor(data, dtype=DTYPES[name])
    assert_same(decode({"data": data, key: name}), expected)
    assert_same(decode({"data": data, key: ALIAS_OF[name]}), expected)


@pytest.mark.parametrize("name", ["int64", "int32", "int8", "uint8", "bool"])
def test_floats_into_integers_truncate_like_torch(name: str) -> None:
    data = [1.7, 0.5, 2.5, 0.0] if name == "uint8" else [1.7, -1.7, 2.5, -0.0]
    assert_same(decode({"data": data, "dtype": name}), torch.tensor(data, dtype=DTYPES[name]))


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (-0.5, "uint8"),
        (-0.9, "uint8"),
        (255.5, "uint8"),
        (256.0, "uint8"),
        (127.9, "int8"),
        (-128.5, "int8"),
        (-128.0, "int8"),
        (32767.99, "int16"),
        (2.0**31, "int32"),
        (-(2.0**31), "int32"),
        (2.0**63, "int64"),
        (float(2**63 - 1024), "int64"),
        (-(2.0**63), "int64"),
        (2**63 - 1, "int64"),
        (-(2**63) - 1, "int64"),
    ],
)
def test_integer_range_agrees_with_torch(value: float, name: str) -> None:
    """What torch.tensor(data, dtype=...) accepts, the codec accepts with the same result;
    what torch refuses is a 422 invalid_data."""
    try:
        expected = torch.tensor([value], dtype=DTYPES[name])
    except (RuntimeError, OverflowError, ValueError):
        with pytest.raises(TensorDecodeError) as info:
            decode({"data": [value], "dtype": name})
        assert info.value.code == "invalid_data"
    else:
        assert_same(decode({"data": [value], "dtype": name}), expected)


def test_float16_overflow_is_inf_like_torch() -> None:
    data = [70000.0, -1e300, 1e-10]
    assert_same(decode({"data": data, "dtype": "float16"}), torch.tensor(data, dtype=torch.float16))


def test_null_dtype_means_inferred() -> None:
    assert_same(decode({"data": [1, 2], "dtype": None}), torch.tensor([1, 2]))


def test_nested_data_with_a_declared_shape_is_reshaped() -> None:
    """Shape and data agree when prod(shape) == number of elements (API.md §2)."""
    got = decode({"data": [[1, 2], [3, 4]], "shape": [4], "dtype": "int32"})
    assert_same(got, torch.arange(1, 5, dtype=torch.int32))


# --- malformed input ------------------------------------------------------------------------------


def nest(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


NINE = nest(1, 9)
B64_ONE = base64.b64encode(b"\x00").decode()

MALFORMED: list[tuple[str, object, str]] = [
    ("ragged rows", [[1, 2], [3]], "ragged_tensor"),
    ("ragged depth", [[1, 2], 3], "ragged_tensor"),
    ("ragged deep", [[[1]], [2]], "ragged_tensor"),
    ("ragged in data object", {"data": [[1.0], [2.0, 3.0]], "dtype": "float32"}, "ragged_tensor"),
    ("flat shape mismatch", {"data": [1, 2, 3], "shape": [2, 2]}, "shape_mismatch"),
    ("nested shape mismatch", {"data": [[1, 2], [3, 4]], "shape": [3]}, "shape_mismatch"),
    ("0-d shape with 2 values", {"data": [1, 2], "shape": []}, "shape_mismatch"),
    ("b64 too short", {"b64": B64_ONE, "shape": [2], "dtype": "uint8"}, "shape_mismatch"),
    (
        "b64 too long",
        {"b64": base64.b64encode(bytes(12)).decode(), "shape": [2], "dtype": "float32"},
        "shape_mismatch",
    ),
    (
        "b64 off by one byte",
        {"b64": base64.b64encode(bytes(9)).decode(), "shape": [2], "dtype": "float32"},
        "shape_mismatch",
    ),
    ("b64 empty for 0-d", {"b64": "", "shape": [], "dtype": "uint8"}, "shape_mismatch"),
    ("9 dims nested", NINE, "too_many_dims"),
    ("9 dims in data object", {"data": NINE, "dtype": "int8"}, "too_many_dims"),
    ("9 dims declared", {"data": [1], "shape": [1] * 9}, "too_many_dims"),
    ("9 dims b64", {"b64": B64_ONE, "shape": [1] * 9, "dtype": "uint8"}, "too_many_dims"),
    ("65 dims nested", nest(1, 65), "too_many_dims"),
    ("bad dtype", {"data": [1], "dtype": "float"}, "invalid_dtype"),
    ("bad datatype", {"data": [1], "datatype": "FP8"}, "invalid_dtype"),
    ("dtype not a string", {"data": [1], "dtype": 32}, "invalid_dtype"),
    ("b64 bad dtype", {"b64": B64_ONE, "shape": [1], "dtype": "u8"}, "invalid_dtype"),
    ("bad base64 char", {"b64": "A!==", "shape": [1], "dtype": "uint8"}, "invalid_base64"),
    ("base64 url alphabet", {"b64": "AA-_", "shape": [3], "dtype": "uint8"}, "invalid_base64"),
    ("base64 no padding", {"b64": "AA", "shape": [1], "dtype": "uint8"}, "invalid_base64"),
    (
        "base64 trailing newline",
        {"b64": "AA==\n", "shape": [1], "dtype": "uint8"},
        "invalid_base64",
    ),
    ("b64 not a string", {"b64": [0], "shape": [1], "dtype": "uint8"}, "invalid_base64"),
    ("unknown key", {"data": [1], "dtype": "int8", "device": "cpu"}, "invalid_tensor"),
    (
        "data and b64",
        {"data": [0], "b64": B64_ONE, "shape": [1], "dtype": "uint8"},
        "invalid_tensor",
    ),
    ("neither data nor b64", {"shape": [1], "dtype": "uint8"}, "invalid_tensor"),
    ("empty object", {}, "invalid_tensor"),
    ("b64 without shape", {"b64": B64_ONE, "dtype": "uint8"}, "invalid_tensor"),
    ("b64 without dtype", {"b64": B64_ONE, "shape": [1]}, "invalid_tensor"),
    ("dtype and datatype", {"data": [1], "dtype": "int8", "datatype": "INT8"}, "invalid_tensor"),
    ("shape not a list", {"data": [1], "shape": 1}, "invalid_shape"),
    ("shape of floats", {"data": [1], "shape": [1.0]}, "invalid_shape"),
    ("shape of bools", {"data": [1], "shape": [True]}, "invalid_shape"),
    ("shape of strings", {"data": [1], "shape": ["1"]}, "invalid_shape"),
    ("negative size", {"data": [1, 2], "shape": [-1, 2]}, "invalid_shape"),
    ("negative size b64", {"b64": "AAAA", "shape": [2, 2, -1], "dtype": "uint8"}, "invalid_shape"),
    ("size past int64", {"data": [1], "shape": [2**63]}, "invalid_shape"),
    ("zero with huge sizes", {"data": [], "shape": [0, 10**30]}, "invalid_shape"),
    ("zero with huge b64", {"b64": "", "shape": [0, 2**62, 4], "dtype": "uint8"}, "invalid_shape"),
    ("other string", ["foo"], "invalid_data"),
    ("bare other string", "foo", "invalid_data"),
    ("numeric string", ["1.5"], "invalid_data"),
    ("numeric string with dtype", {"data": ["1.5"], "dtype": "float32"}, "invalid_data"),
    ("int string with int dtype", {"data": ["1"], "dtype": "int64"}, "invalid_data"),
    ("lowercase nan", ["nan"], "invalid_data"),
    ("python-style inf", {"data": ["inf"], "dtype": "float64"}, "invalid_data"),
    ("bool string", {"data": ["False"], "dtype": "bool"}, "invalid_data"),
    ("empty string", {"data": [1.0, ""], "dtype": "float32"}, "invalid_data"),
    ("string among nested", [[1.0, "NaN"], [2.0, "x"]], "invalid_data"),
    ("NaN into integers", {"data": ["NaN"], "dtype": "int64"}, "invalid_data"),
    ("Infinity into uint8", {"data": [1, "Infinity"], "dtype": "uint8"}, "invalid_data"),
    ("null", None, "invalid_data"),
    ("null inside", [1.0, None], "invalid_data"),
    ("null inside float dtype", {"data": [1.0, None], "dtype": "float32"}, "invalid_data"),
    ("null inside bool dtype", {"data": [None], "dtype": "bool"}, "invalid_data"),
    ("null inside int dtype", {"data": [None], "dtype": "int32"}, "invalid_data"),
    ("null data", {"data": None, "dtype": "float32"}, "invalid_data"),
    ("dict inside", [{"a": 1}], "invalid_data"),
    ("dict inside data", {"data": [{}], "dtype": "float32"}, "invalid_data"),
    ("uint8 overflow", {"data": [0, 256], "dtype": "uint8"}, "invalid_data"),
    ("uint8 negative", {"data": [-1], "dtype": "UINT8"}, "invalid_data"),
    ("uint8 float overflow", {"data": [255.0, 256.0], "dtype": "uint8"}, "invalid_data"),
    ("int8 overflow", {"data": [128], "dtype": "int8"}, "invalid_data"),
    ("int8 underflow", {"data": [-129], "dtype": "int8"}, "invalid_data"),
    ("int16 overflow", {"data": [2**15], "dtype": "int16"}, "invalid_data"),
    ("int32 overflow", {"data": [1e10], "dtype": "int32"}, "invalid_data"),
    ("int64 overflow", {"data": [2**63], "dtype": "int64"}, "invalid_data"),
    ("int64 float overflow", {"data": [9.3e18], "dtype": "int64"}, "invalid_data"),
    ("nested int64 overflow", [2**63], "invalid_data"),
    ("int beyond 64 bits", [2**64], "invalid_data"),
    ("int beyond 64 bits float dtype", {"data": [2**70], "dtype": "float64"}, "invalid_data"),
    (
        "bool b64 byte 2",
        {"b64": base64.b64encode(b"\x00\x02").decode(), "shape": [2], "dtype": "bool"},
        "invalid_data",
    ),
    (
        "bool b64 byte 255",
        {"b64": base64.b64encode(b"\xff").decode(), "shape": [], "dtype": "BOOL"},
        "invalid_data",
    ),
]


@pytest.mark.parametrize(
    ("value", "code"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_input_is_a_decode_error(value: object, code: str) -> None:
    with pytest.raises(TensorDecodeError) as info:
        decode_tensor(value, max_elements=LIMIT, where="inputs.a")
    error = info.value
    assert error.code == code
    assert error.status_code == 422
    assert error.message.startswith("inputs.a")
    assert isinstance(error.details, dict)
    orjson.dumps(error.details)  # the error body must be writable


def test_torch_agrees_those_integers_do_not_fit() -> None:
    """The overflow cases above are errors for torch.tensor too (except that torch wraps a
    negative Python int into uint8, -1 -> 255; the codec refuses it: a wire value that
    silently changes is worse than an error)."""
    for data, dtype in (([2**63], None), ([256], torch.uint8), ([128], torch.int8)):
        with pytest.raises((RuntimeError, OverflowError, ValueError)):
            torch.tensor(data, dtype=dtype)


def test_ragged_message_says_what_disagrees() -> None:
    with pytest.raises(TensorDecodeError, match="not regular"):
        decode([[1, 2], [3]])


def test_shape_mismatch_details() -> None:
    with pytest.raises(TensorDecodeError) as info:
        decode({"data": [1, 2, 3], "shape": [2, 2]})
    assert info.value.details == {"shape": [2, 2], "expected": 4, "got": 3}
    b64 = base64.b64encode(bytes(4)).decode()
    with pytest.raises(TensorDecodeError) as info:
        decode({"b64": b64, "shape": [2], "dtype": "float64"})
    assert info.value.details == {"expected_bytes": 16, "got_bytes": 4}


def test_too_many_dims_details() -> None:
    for value in (NINE, {"data": [1], "shape": [1] * 9}):
        with pytest.raises(TensorDecodeError) as info:
            decode(value)
        assert info.value.details == {"ndim": 9, "max_ndim": MAX_DIMS}


@pytest.mark.parametrize("bad", ["foo", "1.5", "nan", "Inf", "null"])
def test_only_the_three_strings_are_accepted(bad: str) -> None:
    """Decision: the contract names three strings; anything else (numeric strings included)
    is an error rather than being parsed by numpy's float()."""
    with pytest.raises(TensorDecodeError, match="NaN") as info:
        decode({"data": [1.0, bad], "dtype": "float64"})
    assert info.value.code == "invalid_data"


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"b64": B64_ONE, "shape": [10**6, 10**6], "dtype": "uint8"},
        {"b64": B64_ONE, "shape": [10**6, 10**6], "dtype": "float64"},
        {"data": [1], "shape": [10**6, 10**6]},
        {"data": [], "shape": [10**18, 10**18, 10**18]},
        {"b64": "!!!not base64 at all", "shape": [2**40], "dtype": "float32"},
    ],
)
def test_declared_shape_over_the_limit_is_refused_before_allocation(value: object) -> None:
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        decode(value)
    assert time.perf_counter() - start < 0.05
    error = info.value
    assert error.status_code == 413
    assert error.code == "elements_limit"
    assert error.details["limit"] == "max_elements"
    assert error.details["allowed"] == LIMIT
    assert float(error.details["requested"]) == float(math.prod(value["shape"]))  # type: ignore[index]
    orjson.dumps(error.details)


@pytest.mark.parametrize(
    "value",
    [
        list(range(11)),
        [[0.5] * 4] * 3,
        {"data": list(range(11)), "dtype": "int8"},
        {"data": list(range(12)), "shape": [3, 4]},
    ],
)
def test_data_over_the_limit(value: object) -> None:
    with pytest.raises(LimitExceeded) as info:
        decode(value, max_elements=10)
    assert info.value.details["requested"] in (11, 12)


def test_at_the_limit_is_fine() -> None:
    assert decode(list(range(10)), max_elements=10).numel() == 10
    b64 = base64.b64encode(bytes(10)).decode()
    assert decode({"b64": b64, "shape": [10], "dtype": "uint8"}, max_elements=10).numel() == 10


def test_zero_sized_tensors_are_within_the_limit_up_to_its_length() -> None:
    got = decode({"b64": "", "shape": [0, 10], "dtype": "float32"}, max_elements=10)
    assert got.shape == (0, 10)


@pytest.mark.parametrize("shape", [[0, 11], [11, 0], [0, 10**6], [3, 0, 2**40]])
def test_zero_sized_tensors_may_not_be_longer_than_the_limit_in_any_dimension(
    shape: list[int],
) -> None:
    """An empty [0, 10**6] holds nothing, but a route that builds something per column of
    it (feature names, pieces) would build a million: refused like a tensor that big."""
    with pytest.raises(LimitExceeded) as info:
        decode({"b64": "", "shape": shape, "dtype": "float32"}, max_elements=10)
    assert info.value.code == "elements_limit"
    assert info.value.details["requested"] == float(max(shape))


def test_long_b64_text_is_refused_before_decoding() -> None:
    """A b64 text far longer than its shape needs is a shape mismatch, found by length."""
    text = "AAAA" * 2_000_000
    start = time.perf_counter()
    with pytest.raises(TensorDecodeError) as info:
        decode({"b64": text, "shape": [2], "dtype": "uint8"})
    assert time.perf_counter() - start < 0.05
    assert info.value.code == "shape_mismatch"


# --- encode_tensor odds and ends ------------------------------------------------------------------


def test_encode_handles_views_and_grad() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_()
    view = base.t()[1:]  # non-contiguous, with grad
    for encoding in ("json", "b64"):
        body = orjson.loads(dumps(encode_tensor(view, encoding)))  # type: ignore[arg-type]
        assert_same(decode(body), view.detach().contiguous())


def test_encode_json_numbers_are_numbers() -> None:
    body = orjson.loads(dumps(encode_tensor(torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8))))
    assert body == {"shape": [2, 2], "dtype": "uint8", "data": [[1, 2], [3, 4]]}
    body = orjson.loads(dumps(encode_tensor(torch.tensor([True, False]))))
    assert body == {"shape": [2], "dtype": "bool", "data": [True, False]}


# --- numbers past doubles, empty shapes with huge sizes, the JSON size of nesting --------------


def test_loads_json_reads_numbers_past_doubles_as_infinities() -> None:
    assert loads_json(b'{"x": [1e400, -1e400, 2.5]}') == {"x": [math.inf, -math.inf, 2.5]}
    assert loads_json(b"[18446744073709551616]") == [1.8446744073709552e19]  # orjson's reading
    assert loads_json('{"a": 1}') == {"a": 1}
    # Integers past doubles, of any length (Python's int() refuses past 4300 digits).
    for digits in (309, 400, 5000):
        text = b"[1" + b"0" * digits + b", -1" + b"0" * digits + b", -9223372036854775808]"
        assert loads_json(text) == [math.inf, -math.inf, -(2**63)]


@pytest.mark.parametrize(
    "text",
    [
        b"[NaN]",
        b"[1e400, NaN]",  # read again past orjson for the infinity: still no NaN literal
        b"[1e400, Infinity]",
        b'[1e400, "\\ud800"]',  # a lone surrogate
        b"[1e400, ",
        b"[" * 2000 + b"1e400" + b"]" * 2000,  # deeper than orjson reads
    ],
)
def test_loads_json_refuses_what_orjson_refuses(text: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads_json(text)


@pytest.mark.parametrize("shape", [[0, 2**48], [2**24, 0, 2**24], [0], [3, 0, 5]])
def test_an_empty_shape_may_have_huge_sizes_up_to_its_extent(shape: list[int]) -> None:
    check_extent(shape, "x")


@pytest.mark.parametrize("shape", [[0, 2**48 + 1], [0, 2**62, 4], [2**40, 0, 2**40]])
def test_an_empty_shape_past_its_extent_is_refused(shape: list[int]) -> None:
    with pytest.raises(TensorDecodeError) as caught:
        check_extent(shape, "x")
    assert caught.value.code == ErrorCode.INVALID_SHAPE


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((0,), torch.float32),
        ((3, 0), torch.int64),
        ((0, 7), torch.float64),
        ((2, 3, 0), torch.bool),
    ],
)
def test_the_json_estimate_covers_the_real_text_of_empty_tensors(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    text = orjson.dumps(torch.zeros(shape, dtype=dtype).tolist())
    assert len(text) <= estimate_encoded_bytes(shape, dtype, "json")


def test_the_json_estimate_of_empty_but_wide_tensors_is_their_nesting() -> None:
    wide = estimate_encoded_bytes((0, 2**40), torch.float32, "json")
    tall = estimate_encoded_bytes((2**40, 0), torch.float32, "json")
    assert wide < 100  # "[]"
    assert tall >= 3 * 2**40  # 2**40 times "[]," inside the outer list
    assert estimate_encoded_bytes((2**40, 0), torch.float32, "binary") < 100
