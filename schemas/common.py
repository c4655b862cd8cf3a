"""Models and field types shared by every route: errors, wire tensors, devices, seeds."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

TorchDType = Literal[
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"
]
"""torch's dtype names without the ``torch.`` prefix."""

OIPDType = Literal[
    "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64"
]
"""The Open Inference Protocol's names, in the same order."""

DTYPE_NAMES: tuple[str, ...] = get_args(TorchDType)
OIP_DTYPE_NAMES: tuple[str, ...] = get_args(OIPDType)

DType = TorchDType | OIPDType
"""A torch dtype name without the ``torch.`` prefix, or its Open Inference Protocol alias."""

_SHAPE_SCHEMA = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0},
    "maxItems": 8,
    "description": "Sizes of the dimensions (at most 8).",
}
_DTYPE_SCHEMA = {"type": "string", "enum": [*DTYPE_NAMES, *OIP_DTYPE_NAMES]}
_NESTED_SCHEMA = {
    "description": (
        "A nested list of numbers or booleans (or one number for a 0-d tensor); dtype is "
        "inferred as torch.tensor infers it: ints → int64, any float → float32, bools → "
        'bool. Non-finite floats are the strings "NaN", "Infinity", "-Infinity".'
    ),
    "anyOf": [{"type": "array"}, {"type": "number"}, {"type": "boolean"}],
}
_DATA_OBJECT_SCHEMA = {
    "type": "object",
    "description": "Values with optional shape and dtype. Flat data (row-major) needs shape.",
    "properties": {
        "data": _NESTED_SCHEMA,
        "shape": _SHAPE_SCHEMA,
        "dtype": _DTYPE_SCHEMA,
        "datatype": {**_DTYPE_SCHEMA, "description": "Open Inference Protocol name for dtype."},
    },
    "required": ["data"],
    "additionalProperties": False,
}
_B64_OBJECT_SCHEMA = {
    "type": "object",
    "description": "Base64 of the little-endian, C-order bytes; shape and dtype required.",
    "properties": {
        "b64": {"type": "string", "contentEncoding": "base64"},
        "shape": _SHAPE_SCHEMA,
        "dtype": _DTYPE_SCHEMA,
        "datatype": {**_DTYPE_SCHEMA, "description": "Open Inference Protocol name for dtype."},
    },
    "required": ["b64", "shape"],
    "additionalProperties": False,
}
WIRE_TENSOR_SCHEMA: dict[str, Any] = {
    "title": "Tensor",
    "description": (
        'A tensor in one of three forms: a nested list; {"data", "shape"?, "dtype"?}; '
        'or {"b64", "shape", "dtype"}. At most 8 dimensions; shape and data must agree.'
    ),
    "anyOf": [_NESTED_SCHEMA, _DATA_OBJECT_SCHEMA, _B64_OBJECT_SCHEMA],
}


# Tensor fields are validated by the codec (numpy, one call per tensor), never element by
# element by pydantic: the root type is Any and the schema above documents it.
class Tensor(RootModel[Any]):
    """A tensor in any of the contract's three input forms."""

    root: Annotated[Any, WithJsonSchema(WIRE_TENSOR_SCHEMA)]


TensorRef = str | Tensor
"""A tensor argument of a step: the name of an input or earlier output, or an inline tensor."""

TensorOrScalar = str | int | float | Tensor
"""A name, an inline tensor, or a plain number (a Python scalar keeps the other operand's
dtype, as in torch)."""

_DEVICE_DOC = (
    "Where to compute: `auto` (CUDA when present, else CPU), `cpu`, `cuda` (= `cuda:0`) or "
    "`cuda:N`; default: the service's default device. A device that is not present is a 422 "
    "`device_unavailable`."
)
_SEED_DOC = (
    "Seeds every random draw of the request, so it is reproducible. Random numbers are drawn "
    "on the CPU and moved, so a seed gives the same numbers on any device."
)
Device = Annotated[
    str,
    Field(pattern=r"^(auto|cpu|cuda(:\d{1,2})?)$", description=_DEVICE_DOC, examples=["auto"]),
]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description=_SEED_DOC, examples=[0])]


class StrictModel(BaseModel):
    """Base of every request model: unknown fields are an error, not silently ignored, and
    values are not coerced (``true`` is not the integer 1, ``"3"`` is not the number 3)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ComputeRequest(StrictModel):
    """Fields every compute request may carry."""

    device: Annotated[Device | None, Field(description=_DEVICE_DOC)] = None
    seed: Annotated[Seed | None, Field(description=_SEED_DOC)] = None


class TensorData(BaseModel):
    """A tensor in a response, as JSON (the default encoding)."""

    shape: list[int] = Field(description="Sizes of the dimensions.", examples=[[2, 2]])
    dtype: str = Field(description="torch dtype name without the prefix.", examples=["float32"])
    data: Any = Field(
        description="Nested list of values (a bare number for a 0-d tensor). Non-finite floats "
        'are "NaN", "Infinity" and "-Infinity". bfloat16 values are written as float32.',
        examples=[[[1.0, 2.0], [3.0, 4.0]]],
    )


class TensorB64(BaseModel):
    """A tensor in a response with ``?encoding=b64``."""

    shape: list[int] = Field(description="Sizes of the dimensions.", examples=[[2]])
    dtype: str = Field(description="torch dtype name without the prefix.", examples=["float32"])
    b64: str = Field(
        description="Base64 of the little-endian, C-order bytes.", examples=["AACAPwAAAEA="]
    )


TensorOut = TensorData | TensorB64
"""A response tensor: JSON by default, base64 with ``?encoding=b64``."""


class ComputeResponse(BaseModel):
    """Fields every compute response carries."""

    device: str = Field(description="The device actually used.", examples=["cpu"])
    elapsed_ms: float = Field(
        description="Compute time in milliseconds (decoding and encoding excluded).",
        examples=[1.25],
    )


class ErrorResponse(BaseModel):
    """Every error has this shape (also a valid Open Inference Protocol error)."""

    error: str = Field(
        description="Human-readable message.",
        examples=["device 'cuda:3' is not available here; available: cpu"],
    )
    code: str = Field(
        description="Stable snake_case code to branch on.", examples=["device_unavailable"]
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Machine-readable context: for limits `limit`, `allowed` and `requested`; "
        "for validation errors the list of `errors`; for 500s the `request_id`.",
        examples=[{"limit": "max_elements", "allowed": 33554432, "requested": 1000000000000}],
    )


Encoding = Literal["json", "b64"]
