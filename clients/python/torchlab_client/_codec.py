"""Tensors on the wire <-> numpy arrays (and torch tensors, when torch is installed).

Requests: an array (numpy, torch, a numpy scalar, anything with ``__array__`` such as a
pandas DataFrame, a list of arrays) becomes ``{"data", "shape", "dtype"}`` with its own
dtype when small; when its bytes exceed the threshold, its little-endian C-order bytes go
after the JSON (``{"shape", "dtype", "binary_data_size"}``, the Open Inference Protocol's
binary data extension) or, where a body cannot be framed (a multipart form, or
``binary=False``), as ``{"b64", "shape", "dtype"}``. A dtype the wire does not carry is a
``TypeError`` naming it, as is a numpy masked array (the wire has no mask). Plain Python
lists and numbers are sent as they are, so the service infers their dtype as
``torch.tensor`` would. Responses: any form back to an array of the
wire dtype (a binary answer's arrays are writable views of the one buffer it was read
into), except bfloat16, which numpy lacks: it arrives as float32 (exactly: every bfloat16
is a float32), or as ``torch.bfloat16`` with ``as_torch``. Non-finite floats travel as the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` both ways.

No I/O here, and no torch import unless the caller already imported torch or asks for torch
results.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from torchlab_client._exceptions import ProtocolError

NDArray = npt.NDArray[Any]

# The dtype table and its inverse: wire name -> numpy dtype of the decoded array.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype(np.uint8),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.float32),  # numpy has no bfloat16: values widen exactly
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
OIP_ALIASES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "BF16": "bfloat16",
    "FP32": "float32",
    "FP64": "float64",
}
WIRE_NAMES: dict[np.dtype[Any], str] = {
    dtype: name for name, dtype in WIRE_DTYPES.items() if name != "bfloat16"
}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
BINARY_SIZE = "binary_data_size"
FRAME_ALIGN = 64
"""A framed body's JSON is padded with spaces to a multiple of this, so that its binary part
starts aligned."""


@dataclass
class EncodeStats:
    """What encoding a request body did: how many tensors went as base64, how many as
    raw bytes after the JSON."""

    b64_tensors: int = 0
    tensors: int = 0
    binary_tensors: int = 0


def _torch_module() -> Any:
    """torch if the program has imported it (a tensor cannot exist otherwise), else None."""
    return sys.modules.get("torch")


def require_torch() -> Any:
    """Import torch for ``as_torch`` results, with a clear message when it is absent."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "as_torch=True needs PyTorch: pip install torch (the client works without it "
            "and returns numpy arrays)"
        ) from exc


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a numpy array or a torch tensor (sent as a wire tensor)."""
    if isinstance(value, np.ndarray):
        return True
    torch = _torch_module()
    return torch is not None and isinstance(value, torch.Tensor)


def is_array_like(value: object) -> bool:
    """Whether ``value`` is an array of some library: a numpy array or scalar, a torch
    tensor, or anything else with ``__array__`` (a pandas DataFrame or Series, ...)."""
    if isinstance(value, np.generic):
        return True
    if isinstance(value, str | bytes | bool | int | float | None):
        return False
    return is_tensor(value) or hasattr(value, "__array__")


def _holds_arrays(value: object) -> bool:
    if isinstance(value, list | tuple):
        return any(_holds_arrays(item) for item in value)
    return is_array_like(value)


def tensor_input(value: Any, where: str = "a tensor") -> Any:
    """A value given where the service takes one tensor, as the client sends it.

    numpy arrays and torch tensors are kept; a numpy scalar becomes a 0-d array of its own
    dtype; anything else with ``__array__`` (a pandas DataFrame or Series, ...) becomes a
    numpy array; a list or tuple holding arrays becomes one array (numpy's ``np.array`` of
    it, torch's ``stack`` when every item is a torch tensor). Plain nested lists of Python
    numbers, Python numbers and strings (names) are sent as they are. An array of a dtype
    the wire does not carry is a ``TypeError`` naming ``where`` and the dtype.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise masked_array(where)
    if isinstance(value, np.generic):  # before float: np.float64 is a float
        value = np.asarray(value)
    elif value is None or isinstance(value, str | bool | int | float):
        return value
    elif not is_tensor(value) and hasattr(value, "__array__"):
        value = np.asarray(value)
    elif isinstance(value, list | tuple) and _holds_arrays(value):
        value = _stacked(value, where)
    if isinstance(value, np.ndarray) and value.dtype.newbyteorder("=") not in WIRE_NAMES:
        raise unsupported_dtype(value.dtype, where)  # here, where the tensor is named
    return value


def _stacked(values: list[Any] | tuple[Any, ...], where: str) -> Any:
    """One array of a list of arrays (a torch tensor when they all are)."""
    torch = _torch_module()
    if torch is not None and values and all(isinstance(v, torch.Tensor) for v in values):
        try:
            return torch.stack(list(values))
        except RuntimeError as exc:
            raise ValueError(f"{where}: the tensors in the list differ in shape") from exc
    try:
        return np.array([_plain(item) for item in values])
    except ValueError as exc:
        raise ValueError(
            f"{where}: the arrays in the list do not stack into one array ({exc})"
        ) from exc


def _plain(value: Any) -> Any:
    """``value`` with torch tensors inside replaced by numpy arrays (for ``np.array``)."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.ma.MaskedArray):
        raise masked_array()
    torch = _torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        return _array_and_name(value)[0]
    return value


def wire_dtype(name: str) -> str:
    """The canonical wire name of a dtype name or its Open Inference Protocol alias."""
    canonical = OIP_ALIASES.get(name, name)
    if canonical not in WIRE_DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(WIRE_DTYPES)}")
    return canonical


_CASTS = {
    "uint16": "a.astype(np.int32)",
    "uint32": "a.astype(np.int64)",
    "uint64": "a.astype(np.int64) (if every value is below 2**63)",
    "float128": "a.astype(np.float64)",
    "longdouble": "a.astype(np.float64)",
}


def unsupported_dtype(dtype: np.dtype[Any], where: str = "a tensor") -> TypeError:
    """The error for an array whose dtype the wire does not carry, naming the dtype and a
    cast that keeps the values."""
    name = str(dtype.newbyteorder("="))
    wire = ", ".join(name for name in WIRE_DTYPES if name != "bfloat16")
    if dtype.kind == "c":
        hint = "complex numbers are not supported; send the real and imaginary parts apart"
    elif dtype.kind in "OSUV":
        hint = "its values are not numbers of one dtype; convert it, e.g. a.astype(np.float64)"
    elif dtype.kind in "mM":
        hint = "convert dates and durations to numbers first"
    else:
        hint = f"cast it first: {_CASTS.get(name, 'a.astype(np.float64)')}"
    return TypeError(
        f"{where} has numpy dtype {name}, which torchlab does not carry ({hint}); the wire "
        f"dtypes are {wire} (and bfloat16 from torch)"
    )


def masked_array(where: str = "a tensor") -> TypeError:
    """The error for a numpy masked array, refused whether or not anything is masked: the
    wire has no mask, so its masked entries would go as ``null`` (a 422) in JSON and as the
    hidden values underneath in raw bytes (a silently wrong answer)."""
    return TypeError(
        f"{where} is a numpy masked array, which torchlab does not carry (the wire has no "
        "mask: the values hidden under it would be sent); send a.filled(value) with the "
        "value masked entries stand for, a.compressed() for the unmasked ones only, or "
        "a.data if the mask does not matter"
    )


def _array_and_name(value: Any, where: str = "a tensor") -> tuple[NDArray, str, bytes | None]:
    """(array for JSON values, wire dtype name, raw little-endian bytes if already known)."""
    if isinstance(value, np.ma.MaskedArray):
        raise masked_array(where)
    if isinstance(value, np.ndarray):
        normalized = value.dtype.newbyteorder("=")
        if normalized not in WIRE_NAMES:
            raise unsupported_dtype(value.dtype, where)
        return value, WIRE_NAMES[normalized], None
    torch = _torch_module()
    assert torch is not None
    tensor = value.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.contiguous()
    if tensor.dtype == torch.bfloat16:
        raw = tensor.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
        return tensor.float().numpy(), "bfloat16", raw
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in WIRE_DTYPES:
        raise TypeError(
            f"{where} has torch dtype {tensor.dtype}, which torchlab does not carry; the wire "
            f"dtypes are {', '.join(WIRE_DTYPES)}"
        )
    return tensor.numpy(), name, None


def encode_tensor(
    value: Any,
    b64_threshold: int,
    stats: EncodeStats | None = None,
    payloads: list[memoryview] | None = None,
) -> Any:
    """A request tensor: an array (numpy, torch, a numpy scalar, anything with
    ``__array__``, a list of arrays) as a wire object with its dtype; when its bytes exceed
    ``b64_threshold``, its raw bytes are appended to ``payloads`` (to follow the JSON) or,
    without ``payloads``, written in base64. Plain nested lists and numbers are JSON values
    with non-finite floats written as strings."""
    value = tensor_input(value)
    if not is_tensor(value):
        return to_json_values(value)
    array, name, raw = _array_and_name(value)
    if array.ndim > 8:
        raise ValueError(f"a tensor has at most 8 dimensions, this one has {array.ndim}")
    if stats is not None:
        stats.tensors += 1
    nbytes = array.size * (2 if name == "bfloat16" else array.dtype.itemsize)
    shape = [int(s) for s in array.shape]
    if nbytes > b64_threshold and payloads is not None:
        if stats is not None:
            stats.binary_tensors += 1
        payload = memoryview(raw) if raw is not None else raw_view(array)
        payloads.append(payload)
        return {"shape": shape, "dtype": name, BINARY_SIZE: payload.nbytes}
    if nbytes > b64_threshold:
        if stats is not None:
            stats.b64_tensors += 1
        if raw is None:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        return {"b64": base64.b64encode(raw).decode("ascii"), "shape": shape, "dtype": name}
    return {"data": json_data(array), "shape": shape, "dtype": name}


def raw_view(array: NDArray) -> memoryview:
    """An array's little-endian C-order bytes: a view of it when it is already so laid out,
    else of one copy."""
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return contiguous.reshape(-1).view(np.uint8).data


def json_data(array: NDArray) -> Any:
    """Nested lists (a bare number for 0-d) with non-finite floats as strings."""
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        values = array.astype(np.float64).astype(object)
        values[np.isnan(array)] = "NaN"
        values[np.isposinf(array)] = "Infinity"
        values[np.isneginf(array)] = "-Infinity"
        return values.tolist() if array.ndim else values[()]
    return array.tolist()


def to_json_values(
    value: Any,
    b64_threshold: int | None = None,
    stats: EncodeStats | None = None,
    payloads: list[memoryview] | None = None,
) -> Any:
    """A JSON-ready copy of ``value``: numpy scalars as Python numbers, non-finite floats as
    strings, and (with a threshold) arrays and tensors anywhere inside as wire tensors, the
    large ones' bytes appended to ``payloads`` when given (in the order of the JSON text)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.generic):
        return to_json_values(value.item())
    if b64_threshold is not None and is_array_like(value):
        return encode_tensor(value, b64_threshold, stats, payloads)
    if is_tensor(value):  # no threshold: plain values
        return json_data(_array_and_name(value)[0])
    if hasattr(value, "__array__"):
        return json_data(_array_and_name(np.asarray(value))[0])
    if isinstance(value, Mapping):
        return {str(k): to_json_values(v, b64_threshold, stats, payloads) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_values(v, b64_threshold, stats, payloads) for v in value]
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def replace_non_finite(data: Any) -> Any:
    if isinstance(data, list):
        return [replace_non_finite(item) for item in data]
    if isinstance(data, str):
        if data not in _NON_FINITE:
            raise ProtocolError(f"unexpected string {data[:40]!r} in tensor data")
        return _NON_FINITE[data]
    return data


def is_wire_tensor(value: object) -> bool:
    """Whether ``value`` looks like a response tensor ``{"shape", "dtype", "data"|"b64"}``
    (or a binary answer's, its array attached by :func:`read_frame`)."""
    return (
        isinstance(value, dict)
        and "shape" in value
        and ("dtype" in value or "datatype" in value)
        and ("data" in value or "b64" in value or "array" in value)
    )


def frame_json(text: bytes) -> bytes:
    """A framed body's JSON part: ``text`` padded with spaces to :data:`FRAME_ALIGN`."""
    return text + b" " * (-len(text) % FRAME_ALIGN)


def read_frame(body: bytearray, json_length: int) -> dict[str, Any]:
    """A binary answer's JSON, each ``{"shape", "dtype", "binary_data_size"}`` in it given
    its ``array``: a writable view of ``body`` (no copy), in the order of the JSON text."""
    if not 0 <= json_length <= len(body):
        raise ProtocolError(f"a binary answer of {len(body)} bytes says its JSON has {json_length}")
    try:
        answer = json.loads(bytes(memoryview(body)[:json_length]))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the JSON part of a binary answer is not JSON: {exc!r}") from exc
    if not isinstance(answer, dict):
        raise ProtocolError(f"expected a JSON object, got {type(answer).__name__}")
    offset = json_length
    stack: list[Any] = [answer]
    while stack:  # depth-first in key order: the order of the JSON text
        value = stack.pop()
        if isinstance(value, dict) and BINARY_SIZE in value:
            offset = _attach(value, body, offset)
            continue
        items = value.values() if isinstance(value, dict) else value
        stack.extend(reversed([item for item in items if isinstance(item, dict | list)]))
    if offset != len(body):
        raise ProtocolError(f"a binary answer's tensors hold {offset} bytes of {len(body)}")
    return answer


MAX_DIMS = 32
"""The most dimensions an answer's tensor may have (numpy's own limit is 64; the service
sends at most 8)."""


def wire_shape(value: Any) -> tuple[int, ...]:
    """An answer's ``shape``, checked: a list of at most :data:`MAX_DIMS` integers >= 0
    whose product numpy can hold (of the sizes other than 0, times 8 bytes, under 2**63:
    numpy refuses more even for an empty array); a :class:`ProtocolError` otherwise."""
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise ProtocolError(f"a tensor's shape is not a list of sizes: {value!r:.200}")
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in value):
        raise ProtocolError(f"a tensor's shape is not a list of integers: {value!r:.200}")
    if any(size < 0 for size in value) or math.prod(s for s in value if s) >= 2**60:
        raise ProtocolError(f"a tensor's shape is impossible: {value!r:.200}")
    return tuple(value)


def _attach(item: dict[str, Any], body: bytearray, offset: int) -> int:
    given = item.get("dtype", item.get("datatype"))
    if not isinstance(given, str):
        raise ProtocolError(f"a binary tensor without a dtype: {item!r:.200}")
    try:
        name = wire_dtype(given)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    dtype = np.dtype("<u2") if name == "bfloat16" else WIRE_DTYPES[name].newbyteorder("<")
    size = item[BINARY_SIZE]
    shape = wire_shape(item.get("shape"))
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"a binary tensor's {BINARY_SIZE} is not a size: {size!r:.40}")
    if size != math.prod(shape) * dtype.itemsize or offset + size > len(body):
        raise ProtocolError(f"a binary tensor of shape {list(shape)} cannot hold {size} bytes")
    array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    item["array"] = array.reshape(shape)
    return offset + size


def decode_array(value: Any) -> tuple[NDArray, str]:
    """A response tensor as (numpy array, wire dtype name)."""
    if not is_wire_tensor(value):
        raise ProtocolError(f"expected a tensor {{shape, dtype, data|b64}}, got {value!r:.200}")
    try:
        name = wire_dtype(value.get("dtype", value.get("datatype")))
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    shape = wire_shape(value["shape"])
    dtype = WIRE_DTYPES[name]
    if "array" in value:
        array = value["array"]
        if name == "bfloat16":  # its 16 bits, widened exactly
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(shape), name
    if "b64" in value:
        try:
            raw = base64.b64decode(value["b64"])
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"a tensor's b64 is not base64: {exc}") from exc
        if len(raw) % (2 if name == "bfloat16" else dtype.itemsize):
            raise ProtocolError(f"a {name} tensor's b64 holds {len(raw)} bytes")
        if name == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        expected = math.prod(shape)
        if array.size != expected:
            raise ProtocolError(f"shape {list(shape)} needs {expected} values, got {array.size}")
        return array.reshape(shape), name
    data = value["data"]
    try:
        array = np.array(data, dtype=dtype)
    except (ValueError, TypeError):
        try:
            array = np.array(replace_non_finite(data), dtype=dtype)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ProtocolError(f"tensor data that is not {name} values: {exc}") from exc
    try:
        return array.reshape(shape), name
    except ValueError as exc:
        raise ProtocolError(f"tensor data does not fit shape {list(shape)}: {exc}") from exc


def decode_tensor(value: Any, as_torch: bool = False) -> Any:
    """A response tensor as a numpy array, or a torch tensor (bfloat16 restored) with
    ``as_torch``."""
    array, name = decode_array(value)
    if not as_torch:
        return array
    return array_to_torch(array, name)


def array_to_torch(array: NDArray, name: str | None = None) -> Any:
    """A torch tensor holding ``array`` (cast to ``name``'s torch dtype, e.g. bfloat16)."""
    torch = require_torch()
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if name is not None and name == "bfloat16":
        tensor = tensor.to(torch.bfloat16)
    return tensor


def decode_optional(value: Any, as_torch: bool = False) -> Any:
    """:func:`decode_tensor`, passing None through."""
    return None if value is None else decode_tensor(value, as_torch)


def decode_loose(value: Any, as_torch: bool = False) -> Any:
    """A value that may be a wire tensor, a list of numbers or a number: wire tensors and
    numeric lists become arrays (tensors with ``as_torch``), the rest is left alone."""
    if value is None:
        return None
    if is_wire_tensor(value):
        return decode_tensor(value, as_torch)
    if isinstance(value, list):
        try:
            array = np.array(replace_non_finite(value))
        except (ProtocolError, ValueError):
            return value
        if array.dtype.kind in "biuf":
            return array_to_torch(array) if as_torch else array
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value
