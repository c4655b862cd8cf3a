"""Tensors on the wire <-> numpy arrays (and torch tensors, when torch is installed).

Requests: a numpy array or torch tensor becomes ``{"data", "shape", "dtype"}`` when small
and ``{"b64", "shape", "dtype"}`` (little-endian C-order bytes) when its bytes exceed the
threshold; plain Python lists and numbers are sent as they are, so the service infers their
dtype as ``torch.tensor`` would. Responses: either form back to an array of the wire dtype,
except bfloat16, which numpy lacks: it arrives as float32 (exactly: every bfloat16 is a
float32), or as ``torch.bfloat16`` with ``as_torch``. Non-finite floats travel as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` both ways.

No I/O here, and no torch import unless the caller already imported torch or asks for torch
results.
"""

from __future__ import annotations

import base64
import importlib
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


@dataclass
class EncodeStats:
    """What encoding a request body did: how many tensors went as base64."""

    b64_tensors: int = 0
    tensors: int = 0


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


def wire_dtype(name: str) -> str:
    """The canonical wire name of a dtype name or its Open Inference Protocol alias."""
    canonical = OIP_ALIASES.get(name, name)
    if canonical not in WIRE_DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(WIRE_DTYPES)}")
    return canonical


def _array_and_name(value: Any) -> tuple[NDArray, str, bytes | None]:
    """(array for JSON values, wire dtype name, raw little-endian bytes if already known)."""
    if isinstance(value, np.ndarray):
        array = value
        if array.dtype.kind == "f" and array.dtype.itemsize > 8:
            raise TypeError(f"dtype {array.dtype} has no wire equivalent; cast to float64")
        normalized = array.dtype.newbyteorder("=")
        if normalized not in WIRE_NAMES:
            if array.dtype.kind == "u" and array.dtype.itemsize > 1:
                # uint16/32/64: only uint8 is a torch dtype; widen losslessly where we can.
                if array.dtype.itemsize == 8:
                    raise TypeError("uint64 has no wire equivalent; cast to int64 first")
                return _array_and_name(array.astype(np.int64))
            raise TypeError(
                f"numpy dtype {array.dtype} has no wire equivalent; use one of "
                f"{', '.join(sorted(set(WIRE_NAMES.values())))}"
            )
        return array, WIRE_NAMES[normalized], None
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
        raise TypeError(f"torch dtype {tensor.dtype} has no wire equivalent")
    return tensor.numpy(), name, None


def encode_tensor(value: Any, b64_threshold: int, stats: EncodeStats | None = None) -> Any:
    """A request tensor: a numpy array or torch tensor as a wire object (base64 when its
    bytes exceed ``b64_threshold``); anything else (nested lists, numbers) as JSON values
    with non-finite floats written as strings."""
    if not is_tensor(value):
        return to_json_values(value)
    array, name, raw = _array_and_name(value)
    if array.ndim > 8:
        raise ValueError(f"a tensor has at most 8 dimensions, this one has {array.ndim}")
    if stats is not None:
        stats.tensors += 1
    nbytes = array.size * (2 if name == "bfloat16" else array.dtype.itemsize)
    shape = [int(s) for s in array.shape]
    if nbytes > b64_threshold:
        if stats is not None:
            stats.b64_tensors += 1
        if raw is None:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        return {"b64": base64.b64encode(raw).decode("ascii"), "shape": shape, "dtype": name}
    return {"data": json_data(array), "shape": shape, "dtype": name}


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
    value: Any, b64_threshold: int | None = None, stats: EncodeStats | None = None
) -> Any:
    """A JSON-ready copy of ``value``: numpy scalars as Python numbers, non-finite floats as
    strings, and (with a threshold) arrays and tensors anywhere inside as wire tensors."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.generic):
        return to_json_values(value.item())
    if b64_threshold is not None and is_tensor(value):
        return encode_tensor(value, b64_threshold, stats)
    if isinstance(value, np.ndarray):  # no threshold: plain values
        return json_data(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_values(v, b64_threshold, stats) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_values(v, b64_threshold, stats) for v in value]
    torch = _torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        return json_data(_array_and_name(value)[0])
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _replace_non_finite(data: Any) -> Any:
    if isinstance(data, list):
        return [_replace_non_finite(item) for item in data]
    if isinstance(data, str):
        if data not in _NON_FINITE:
            raise ProtocolError(f"unexpected string {data[:40]!r} in tensor data")
        return _NON_FINITE[data]
    return data


def is_wire_tensor(value: object) -> bool:
    """Whether ``value`` looks like a response tensor ``{"shape", "dtype", "data"|"b64"}``."""
    return (
        isinstance(value, dict)
        and "shape" in value
        and ("dtype" in value or "datatype" in value)
        and ("data" in value or "b64" in value)
    )


def decode_array(value: Any) -> tuple[NDArray, str]:
    """A response tensor as (numpy array, wire dtype name)."""
    if not is_wire_tensor(value):
        raise ProtocolError(f"expected a tensor {{shape, dtype, data|b64}}, got {value!r:.200}")
    try:
        name = wire_dtype(value.get("dtype", value.get("datatype")))
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    shape = tuple(int(s) for s in value["shape"])
    dtype = WIRE_DTYPES[name]
    if "b64" in value:
        raw = base64.b64decode(value["b64"])
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
        array = np.array(_replace_non_finite(data), dtype=dtype)
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
            array = np.array(_replace_non_finite(value))
        except (ProtocolError, ValueError):
            return value
        if array.dtype.kind in "biuf":
            return array_to_torch(array) if as_torch else array
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value
