"""Wire tensors <-> ``torch.Tensor``.

Three input forms (a nested list, ``{"data", "shape", "dtype"}``, ``{"b64", "shape",
"dtype"}``) and three output encodings (JSON lists, base64 of little-endian C-order bytes,
and the raw bytes of the binary data extension, :mod:`service.api.binary`). Lists go to
numpy in one ``np.array`` call and come back through orjson's numpy serialiser, so no
Python loop ever walks the elements; base64 goes through pybase64's SIMD codec. Non-finite
floats travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.

A tensor of a binary request arrives here already built (``{"data": <torch.Tensor>,
"shape", "dtype"}``, a view of the request's bytes made by :mod:`service.api.binary`): no
JSON text can hold a tensor, so that form cannot be forged by a caller.
"""

from __future__ import annotations

import binascii
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import orjson
import pybase64
import torch

from schemas.common import DTYPE_NAMES as WIRE_DTYPE_NAMES
from schemas.common import OIP_DTYPE_NAMES
from service.errors import ErrorCode, LimitExceeded, TensorDecodeError

MAX_DIMS = 8
_MAX_EXTENT = 2**48

Encoding = Literal["json", "b64", "binary"]

# The dtype table and its inverse. bfloat16 has no numpy dtype: its JSON values pass through
# float32 and its raw bytes through uint16.
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in WIRE_DTYPE_NAMES}
OIP_ALIASES: dict[str, str] = dict(zip(OIP_DTYPE_NAMES, WIRE_DTYPE_NAMES, strict=True))
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
_NUMPY_JSON: dict[torch.dtype, np.dtype[Any]] = {
    torch.bool: np.dtype(np.bool_),
    torch.uint8: np.dtype(np.uint8),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(np.float32),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}
# Raw bytes: same as above but little-endian, and bfloat16 carried as its 16 bits.
_NUMPY_RAW: dict[torch.dtype, np.dtype[Any]] = {
    dtype: np_dtype.newbyteorder("<") for dtype, np_dtype in _NUMPY_JSON.items()
}
_NUMPY_RAW[torch.bfloat16] = np.dtype("<u2")

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
WIRE_KEYS = frozenset({"data", "b64", "shape", "dtype", "datatype"})
OIP_NAMES: dict[torch.dtype, str] = {DTYPES[name]: alias for alias, name in OIP_ALIASES.items()}
"""The Open Inference Protocol's name of each dtype (``FP32``)."""
LITTLE_ENDIAN = sys.byteorder == "little"


def parse_dtype(name: object, where: str = "dtype") -> torch.dtype:
    """A torch dtype from its wire name (``float32``) or its Open Inference Protocol alias."""
    if isinstance(name, str):
        canonical = OIP_ALIASES.get(name, name)
        if canonical in DTYPES:
            return DTYPES[canonical]
    allowed = ", ".join([*DTYPES, *OIP_ALIASES])
    if name == "BYTES":
        raise TensorDecodeError(
            f"{where}: BYTES tensors (strings) are not supported; tensors hold numbers: {allowed}",
            details={"dtype": "BYTES", "allowed": [*DTYPES, *OIP_ALIASES]},
            code=ErrorCode.UNSUPPORTED_DATATYPE,
        )
    raise TensorDecodeError(
        f"{where}: unknown dtype {name!r}; use one of {allowed}",
        details={"dtype": repr(name), "allowed": [*DTYPES, *OIP_ALIASES]},
        code=ErrorCode.INVALID_DTYPE,
    )


def numel_of(shape: Sequence[int]) -> int:
    """Number of elements of a shape, as an exact Python int (no overflow)."""
    return math.prod(shape)


def check_elements(numel: int, max_elements: int, what: str) -> None:
    """Refuse a tensor over the element limit before anything is allocated for it."""
    if numel > max_elements:
        # orjson cannot write ints past 64 bits into the details; sizes are < 2**63 each.
        requested = numel if numel < 2**63 else float(numel)
        raise LimitExceeded("max_elements", max_elements, requested, what)


def check_shape(shape: Sequence[int], max_elements: int, what: str) -> None:
    """Refuse a shape over the element limit, or an empty one with a dimension longer than
    the limit: it holds nothing, but whatever is built per row or column of it (names,
    pieces, batches) would not be bounded; nor may its other sizes multiply past what the
    codec describes (:func:`check_extent`), whichever op made it."""
    check_elements(numel_of(shape), max_elements, what)
    longest = max(shape, default=0)
    if longest > max_elements:
        raise LimitExceeded(
            "max_elements",
            max_elements,
            longest if longest < 2**63 else float(longest),
            f"{what}: a dimension of {longest:,}",
            message=f"{what}: shape {list(shape)} has a dimension of {longest:,}, longer than "
            f"the limit max_elements of {max_elements:,} (even an empty tensor may not be that "
            "long in any dimension)",
        )
    check_extent(shape, what)


def check_extent(shape: Sequence[int], where: str) -> None:
    """Refuse an empty shape whose other sizes multiply past :data:`_MAX_EXTENT`: it holds
    nothing and passes the element limit, but its strides overflow torch's and numpy's
    int64 (``[0, 2**62, 4]``), so no op, encoder or picture could take it."""
    if 0 in shape and math.prod(s for s in shape if s) > _MAX_EXTENT:
        raise TensorDecodeError(
            f"{where}: shape {list(shape)} is too large to describe (sizes other than 0 may "
            f"multiply to at most {_MAX_EXTENT})",
            details={"max_extent": _MAX_EXTENT},
            code=ErrorCode.INVALID_SHAPE,
        )


def parse_shape(value: object, where: str) -> tuple[int, ...]:
    """A wire shape: a list of at most :data:`MAX_DIMS` sizes, each in ``[0, 2**63)``."""
    if not isinstance(value, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in value
    ):
        raise TensorDecodeError(
            f"{where}: shape must be a list of integers, got {value!r}",
            code=ErrorCode.INVALID_SHAPE,
        )
    if len(value) > MAX_DIMS:
        raise TensorDecodeError(
            f"{where}: a tensor has at most {MAX_DIMS} dimensions, the shape has {len(value)}",
            details={"ndim": len(value), "max_ndim": MAX_DIMS},
            code=ErrorCode.TOO_MANY_DIMS,
        )
    if any(s < 0 for s in value):
        raise TensorDecodeError(
            f"{where}: shape sizes must be >= 0, got {value}", code=ErrorCode.INVALID_SHAPE
        )
    if any(s >= 2**63 for s in value):
        # torch sizes are int64 (and the value itself may be too long to print).
        raise TensorDecodeError(
            f"{where}: shape sizes must be less than 2**63", code=ErrorCode.INVALID_SHAPE
        )
    # A 0 passes the element limit, but numpy and torch cannot even describe [0, 10**30].
    # Without a 0 the product of the sizes is the element count, which the limit (413)
    # checks.
    check_extent(value, where)
    return tuple(value)


def _array_from_list(data: object, np_dtype: np.dtype[Any] | None, where: str) -> np.ndarray:
    # One np.array call infers the natural dtype, which exposes strings (kind U), nulls and
    # other objects (kind O), and integers past int64 (uint64), none of which a dtype given
    # to np.array would reveal: it parses "1.5", turns null into NaN or False, "x" into True.
    # A large body's lists may come read already (service.api.jsonarrays), as np.array reads
    # them.
    try:
        array = data if isinstance(data, np.ndarray) else np.array(data)
    except ValueError as exc:
        text = str(exc)
        if "maximum number of dimension" in text:
            raise TensorDecodeError(
                f"{where}: a tensor has at most {MAX_DIMS} dimensions, the data has more",
                details={"max_ndim": MAX_DIMS},
                code=ErrorCode.TOO_MANY_DIMS,
            ) from exc
        if "inhomogeneous" in text or "sequence" in text:
            raise TensorDecodeError(
                f"{where}: nesting is not regular (rows of different lengths or mixed depths)",
                details={"reason": text},
                code=ErrorCode.RAGGED_TENSOR,
            ) from exc
        raise TensorDecodeError(f"{where}: {text}", code=ErrorCode.INVALID_DATA) from exc
    except (TypeError, OverflowError) as exc:
        raise TensorDecodeError(f"{where}: {exc}", code=ErrorCode.INVALID_DATA) from exc
    if array.dtype.kind == "U":
        # Rare path: the non-finite floats, written as strings. Any other string is an error.
        _check_ndim(array.ndim, where)
        return _array_from_list(_non_finite(data, where), np_dtype, where)
    if array.dtype.kind not in "biuf":
        raise TensorDecodeError(
            f"{where}: data must hold numbers, booleans or the strings "
            "'NaN', 'Infinity', '-Infinity' (null, objects and integers beyond 64 bits are "
            "not allowed)",
            code=ErrorCode.INVALID_DATA,
        )
    target = np.dtype(np.int64) if np_dtype is None and array.dtype.kind == "u" else np_dtype
    if target is None:
        return array
    if target.kind in "iu" and array.dtype.kind in "iuf" and array.size:
        # Like torch.tensor: floats in [min, max + 1) truncate toward zero, others are errors.
        info = np.iinfo(target)
        low, high = array.min().item(), array.max().item()
        if not (math.isfinite(low) and math.isfinite(high)):
            raise TensorDecodeError(
                f"{where}: NaN and infinities cannot be stored in {target.name}",
                code=ErrorCode.INVALID_DATA,
            )
        if low < info.min or high >= info.max + 1:
            raise TensorDecodeError(
                f"{where}: values from {low} to {high} do not fit {target.name}",
                details={"min": low, "max": high, "dtype": target.name},
                code=ErrorCode.INVALID_DATA,
            )
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target, copy=False)


def _non_finite(data: object, where: str) -> object:
    """``data`` with the strings "NaN", "Infinity", "-Infinity" replaced by floats."""
    if isinstance(data, list):
        return [_non_finite(item, where) for item in data]
    if isinstance(data, str):
        if data not in _NON_FINITE:
            raise TensorDecodeError(
                f"{where}: unexpected string {data[:40]!r} in data; the only strings allowed "
                "are 'NaN', 'Infinity' and '-Infinity'",
                code=ErrorCode.INVALID_DATA,
            )
        return _NON_FINITE[data]
    return data


def _tensor_from_array(array: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # ndim >= 1 here: 0-d arrays are contiguous
    if dtype is None:
        # torch.tensor's inference: any float -> the default float dtype (float32).
        if array.dtype.kind == "f":
            with np.errstate(over="ignore"):  # past float32's range is inf, as in torch
                array = array.astype(np.float32, copy=False)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64, copy=False)
        return torch.from_numpy(array)
    tensor = torch.from_numpy(array)
    return tensor.to(dtype) if tensor.dtype != dtype else tensor


def decode_tensor(value: object, *, max_elements: int, where: str = "tensor") -> torch.Tensor:
    """Decode one wire tensor (any of the three forms) into a CPU tensor.

    Raises :class:`TensorDecodeError` (422) naming what disagrees, or
    :class:`LimitExceeded` (413) when a declared shape is over the element limit.
    """
    if not isinstance(value, dict):
        array = _array_from_list(value, None, where)
        _check_ndim(array.ndim, where)
        check_elements(array.size, max_elements, where)
        return _tensor_from_array(array, None)

    unknown = set(value) - WIRE_KEYS
    if unknown:
        raise TensorDecodeError(
            f"{where}: unknown keys {sorted(unknown)}; a tensor object has "
            "'data' or 'b64', with 'shape' and 'dtype' (or 'datatype')",
            code=ErrorCode.INVALID_TENSOR,
        )
    if "dtype" in value and "datatype" in value:
        raise TensorDecodeError(f"{where}: give 'dtype' or 'datatype', not both")
    if isinstance(value.get("data"), torch.Tensor):
        return _attached(value, max_elements, where)
    dtype_name = value.get("dtype", value.get("datatype"))
    dtype = None if dtype_name is None else parse_dtype(dtype_name, f"{where}.dtype")
    shape = parse_shape(value["shape"], f"{where}.shape") if "shape" in value else None
    # The object's form first (422), then its size (413): a malformed tensor is invalid
    # whatever shape it declares.
    if ("data" in value) == ("b64" in value):
        raise TensorDecodeError(f"{where}: give exactly one of 'data' and 'b64'")
    if "b64" in value:
        if shape is None or dtype is None:
            raise TensorDecodeError(f"{where}: a 'b64' tensor needs 'shape' and 'dtype'")
        if not isinstance(value["b64"], str):
            raise TensorDecodeError(f"{where}.b64 must be a string", code=ErrorCode.INVALID_BASE64)
    elif not isinstance(value["data"], list | int | float | bool | str | np.ndarray):
        raise TensorDecodeError(
            f"{where}.data must be a (nested) list of numbers or one number",
            code=ErrorCode.INVALID_DATA,
        )
    if shape is not None:
        check_shape(shape, max_elements, where)
    if "b64" in value:
        assert shape is not None and dtype is not None
        return _decode_b64(value["b64"], shape, dtype, where)

    np_dtype = None if dtype is None else _NUMPY_JSON[dtype]
    array = _array_from_list(value["data"], np_dtype, where)
    if shape is None:
        _check_ndim(array.ndim, where)
        check_elements(array.size, max_elements, where)
    elif array.size != numel_of(shape):
        raise TensorDecodeError(
            f"{where}: shape {list(shape)} holds {numel_of(shape)} elements "
            f"but data has {array.size}",
            details={"shape": list(shape), "expected": numel_of(shape), "got": array.size},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    else:
        array = array.reshape(shape)
    return _tensor_from_array(array, dtype)


def _attached(value: dict[str, Any], max_elements: int, where: str) -> torch.Tensor:
    """A binary request's tensor, built already: only its size is checked here."""
    tensor: torch.Tensor = value["data"]
    check_shape(tuple(tensor.shape), max_elements, where)
    return tensor


def raw_itemsize(dtype: torch.dtype) -> int:
    """Bytes per element on the wire (bool is one byte)."""
    return _NUMPY_RAW[dtype].itemsize


def _check_ndim(ndim: int, where: str) -> None:
    if ndim > MAX_DIMS:
        raise TensorDecodeError(
            f"{where}: a tensor has at most {MAX_DIMS} dimensions, the data has {ndim}",
            details={"ndim": ndim, "max_ndim": MAX_DIMS},
            code=ErrorCode.TOO_MANY_DIMS,
        )


def _decode_b64(
    text: object, shape: tuple[int, ...], dtype: torch.dtype, where: str
) -> torch.Tensor:
    if not isinstance(text, str):
        raise TensorDecodeError(f"{where}.b64 must be a string", code=ErrorCode.INVALID_BASE64)
    raw_dtype = _NUMPY_RAW[dtype]
    expected = numel_of(shape) * raw_dtype.itemsize
    # Compare the size the text decodes to before decoding it.
    approx = len(text) // 4 * 3 - text[-2:].count("=")
    if abs(approx - expected) > 3:
        raise TensorDecodeError(
            f"{where}: shape {list(shape)} of {DTYPE_NAMES[dtype]} needs {expected} bytes, "
            f"the base64 text holds about {approx}",
            details={"expected_bytes": expected, "got_bytes": approx},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    try:  # SIMD, into a writable buffer that the tensor then uses as it is
        raw = pybase64.b64decode_as_bytearray(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TensorDecodeError(
            f"{where}.b64 is not valid base64: {exc}", code=ErrorCode.INVALID_BASE64
        ) from exc
    if len(raw) != expected:
        raise TensorDecodeError(
            f"{where}: shape {list(shape)} of {DTYPE_NAMES[dtype]} needs {expected} bytes, "
            f"the base64 text holds {len(raw)}",
            details={"expected_bytes": expected, "got_bytes": len(raw)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    array = np.frombuffer(raw, dtype=raw_dtype).reshape(shape)
    if dtype == torch.bool and array.size and array.view(np.uint8).max() > 1:
        raise TensorDecodeError(f"{where}: bool bytes must be 0 or 1", code=ErrorCode.INVALID_DATA)
    if dtype == torch.bfloat16:
        return torch.from_numpy(array.astype(np.int16, copy=False).view(np.int16)).view(
            torch.bfloat16
        )
    return torch.from_numpy(array.astype(raw_dtype.newbyteorder("="), copy=False))


# The most bytes one element takes in a JSON array (sign, digits, exponent, the comma).
_JSON_ELEMENT_BYTES = {
    torch.bool: 6,
    torch.uint8: 4,
    torch.int8: 5,
    torch.int16: 7,
    torch.uint16: 6,
    torch.int32: 12,
    torch.uint32: 11,
    torch.int64: 21,
    torch.uint64: 21,
    torch.float16: 12,
    torch.bfloat16: 14,
    torch.float32: 16,
    torch.float64: 25,
    torch.complex64: 36,
    torch.complex128: 54,
}


def estimate_encoded_bytes(
    size: int | Sequence[int], dtype: torch.dtype, encoding: Encoding
) -> int:
    """At most how many bytes a tensor of ``size`` (its shape, or its element count) of
    ``dtype`` takes in the response: its raw bytes, base64 of them, or a JSON array at each
    element's longest text.

    Given a shape, the JSON estimate counts the brackets and commas of the nested lists
    too: ``[0, 2**40]`` is ``[]``, two bytes, but ``[2**40, 0]`` is 2**40 empty lists, three
    bytes each, though both hold nothing. Python's integers do not overflow, whatever the
    sizes.
    """
    shape = (size,) if isinstance(size, int) else tuple(size)
    numel = numel_of(shape)
    if encoding == "binary":
        return numel * dtype.itemsize + 64
    if encoding == "b64":
        return 4 * -(-numel * dtype.itemsize // 3) + 64
    return numel * _JSON_ELEMENT_BYTES.get(dtype, 25) + _json_nesting_bytes(shape) + 64


def _json_nesting_bytes(shape: tuple[int, ...]) -> int:
    """The brackets and commas of the nested lists of a JSON array of ``shape`` (the
    elements' own commas are counted with the elements): each list is two brackets and a
    comma after it."""
    lists = 1
    total = 0
    for size in shape[:-1]:  # the innermost lists hold the elements
        lists *= size
        if not lists:
            break
        total += lists * 3
    return total + 2 * bool(shape)


def raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor's little-endian C-order bytes, as a flat uint8 tensor (a view of the
    tensor's own storage when it is contiguous on a little-endian machine)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    flat = tensor.contiguous().reshape(-1)
    if not flat.numel():
        return torch.empty(0, dtype=torch.uint8)
    if not LITTLE_ENDIAN and flat.element_size() > 1:
        swapped = flat.view(torch.uint8).numpy().view(_NUMPY_JSON[flat.dtype]).byteswap()
        return torch.from_numpy(swapped.view(np.uint8))
    return flat.view(torch.uint8)


def binary_header(tensor: torch.Tensor) -> dict[str, Any]:
    """A response tensor of the binary encoding: ``{"shape", "dtype", "binary_data_size"}``
    (its bytes follow the response's JSON, see :mod:`service.api.binary`)."""
    nbytes = tensor.numel() * tensor.element_size()
    shape = list(tensor.shape)
    return {"shape": shape, "dtype": DTYPE_NAMES[tensor.dtype], "binary_data_size": nbytes}


def encode_tensor(tensor: torch.Tensor, encoding: Encoding = "json") -> dict[str, Any]:
    """A response tensor: ``{"shape", "dtype", "data"}`` or ``{"shape", "dtype", "b64"}``
    (the binary encoding's header is :func:`binary_header`).

    ``data`` is left as a numpy array (or numpy scalar for 0-d) for orjson to write; see
    :func:`dumps`.
    """
    tensor = tensor.detach() if tensor.requires_grad else tensor
    if not tensor.is_cpu:
        tensor = tensor.cpu()
    tensor = tensor.contiguous()
    if encoding == "binary":
        return binary_header(tensor)
    shape, dtype = list(tensor.shape), DTYPE_NAMES[tensor.dtype]
    if encoding == "b64":
        raw = raw_bytes(tensor).numpy().data
        return {"shape": shape, "dtype": dtype, "b64": pybase64.b64encode_as_string(raw)}
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return {"shape": shape, "dtype": dtype, "data": _json_data(tensor.numpy())}


def _json_data(array: np.ndarray) -> Any:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # Rare path: orjson would write null for every non-finite value, losing which.
        with np.errstate(invalid="ignore"):  # signalling NaNs
            values = array.astype(np.float64).astype(object)
        values[np.isnan(array)] = "NaN"
        values[np.isposinf(array)] = "Infinity"
        values[np.isneginf(array)] = "-Infinity"
        return values.tolist() if array.ndim else values[()]
    if array.ndim == 0:
        return array[()]
    return array


def _past_doubles(text: str) -> float:
    value = float(text)
    if math.isnan(value):  # pragma: no cover - json hands parse_float numbers only
        raise ValueError(text)
    return value


def _past_64_bits(text: str) -> int | float:
    # orjson's reading: integers in [-2**63, 2**64) are integers, others floats (past
    # doubles, infinities: read from the text, as no int of 309 digits converts to one).
    if len(text) <= 21:  # "-" and 20 digits: 2**64 has 20
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return float(text)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(raw: bytes | bytearray | memoryview | str) -> Any:
    """A request body's JSON, read by orjson, with every number read as JavaScript's
    ``JSON.parse`` reads it: integers past 64 bits as floats (orjson's own reading) and
    numbers past doubles (``1e400``) as infinities, which orjson refuses. JSON Schema's
    numbers have no range, so the schema cannot say that ``1e400`` is out of one.

    Raises:
        orjson.JSONDecodeError: The text is not JSON (a :class:`json.JSONDecodeError`).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith("number is infinity"):
            raise
        error = exc
    # Rare: read by the standard library, whose floats overflow to infinities; its other
    # leniencies (NaN literals, lone surrogates, unbounded nesting) refused as orjson would.
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        data = json.loads(
            text,
            parse_float=_past_doubles,
            parse_int=_past_64_bits,
            parse_constant=_no_constants,
        )
        orjson.dumps(data)  # refuses the lone surrogates and depths that orjson refuses
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        try:
            raise error from None
        finally:
            # This frame is in the error's traceback: holding the error here too would make
            # a cycle that keeps the body (and its decoded copy) until the collector runs.
            del error
    return data


def dumps(content: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """JSON bytes of a response body holding numpy arrays (and what ``default`` writes)."""
    return orjson.dumps(content, default=default, option=orjson.OPT_SERIALIZE_NUMPY)
