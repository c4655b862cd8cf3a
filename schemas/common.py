"""Models and field types shared by every route: errors, wire tensors, devices, seeds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

TorchDType = Literal[
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"
]
"""torch's dtype names without the ``torch.`` prefix."""

OIPDType = Literal[
    "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64"
]
"""The Open Inference Protocol's names, in the same order."""

FloatDType = Literal["float16", "bfloat16", "float32", "float64", "FP16", "BF16", "FP32", "FP64"]
"""The floating-point dtypes, by either name."""

DTYPE_NAMES: tuple[str, ...] = get_args(TorchDType)
OIP_DTYPE_NAMES: tuple[str, ...] = get_args(OIPDType)

DType = TorchDType | OIPDType
"""A torch dtype name without the ``torch.`` prefix, or its Open Inference Protocol alias."""

INT64_MIN = -(2**63)
INT64_END = 2**63
"""Integers are 64-bit, as torch's are: from ``INT64_MIN`` up to (not including) ``INT64_END``.
Both bounds are powers of two, so the OpenAPI document (whose numbers are doubles) states
them exactly."""


def _whole_number(value: Any) -> Any:
    # JSON Schema's "integer" is a number without a fraction, whatever its spelling: 2.0 is
    # the integer 2 (JavaScript cannot even tell them apart). Booleans are not numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and not INT64_MIN <= value < INT64_END:
        raise ValueError("integers are 64-bit: from -2**63 to 2**63 - 1")
    return value


Int = Annotated[int, BeforeValidator(_whole_number)]
"""An integer field: a JSON integer, or a number without a fraction (``2.0``), within 64
bits; never a boolean. Every request model's integers are this type, and the published
schema bounds each of them to 64 bits (:meth:`StrictModel.__get_pydantic_json_schema__`)."""

NON_FINITE = ("NaN", "Infinity", "-Infinity")
"""How non-finite floats are written, in tensors and in number fields that take them."""

BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Standard base64 with its padding, nothing else (no line breaks, no URL-safe letters)."""

MAX_NDIM = 8
"""Dimensions of a tensor, at most."""

MAX_TENSORS = 1024
"""Input tensors of one request, at most (and binary tensors of one binary body): the
server makes each as an object and hands it to a worker process one by one, on its event
loop (60,000 one-element inputs held it for half a second)."""

MAX_KEYS = 64
"""Keys of one object of a request, at most (no model has 20 fields). Checked before its
fields are: pydantic makes an error for each unknown key, and listing 100,000 of them took
0.15 s, holding the interpreter. A list that may be long stops at its first invalid item
(``fail_fast``) for the same reason, and a mapping is bounded by :func:`at_most`."""


def at_most(most: int) -> BeforeValidator:
    """A mapping's bound, checked before its entries: pydantic counts only the valid ones
    against a dict's ``max_length``, so 100,000 keys that are not names, under a bound of
    1,024, were 100,000 errors (0.3 s)."""

    def check(value: Any) -> Any:
        if isinstance(value, dict) and len(value) > most:
            raise _too_long("Dictionary", "items", most, len(value))
        return value

    return BeforeValidator(check)


def _too_long(kind: str, what: str, most: int, found: int) -> PydanticCustomError:
    # pydantic's own error for a long list or dict, with the count found, checked before.
    context = {"field_type": kind, "max_length": most, "actual_length": found}
    message = f"{kind} should have at most {{max_length}} {what}, not {{actual_length}}"
    return PydanticCustomError("too_long", message, context)


_OIP_DTYPE_DOC = "Open Inference Protocol name for dtype; give one of the two, not both."
DTYPE_SCHEMA: dict[str, Any] = {"type": "string", "enum": [*DTYPE_NAMES, *OIP_DTYPE_NAMES]}
"""A dtype as the wire takes it: torch's name or the Open Inference Protocol's."""
_NUMBERS: list[dict[str, Any]] = [{"type": "number"}, {"type": "boolean"}]
_NON_FINITE: dict[str, Any] = {"enum": list(NON_FINITE)}


def _shape_schema(ndims: range) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "exclusiveMaximum": INT64_END},
        "minItems": ndims.start,
        "maxItems": ndims.stop - 1,
        "description": f"Sizes of the dimensions ({_count(ndims)}).",
    }


def _count(ndims: range) -> str:
    low, high = ndims.start, ndims.stop - 1
    if low == high:
        return f"{low}"
    return f"at most {high}" if low == 0 else f"{low} to {high}"


def _values_schema(ndims: range, scalar: list[dict[str, Any]]) -> dict[str, Any]:
    # Arrays nested exactly as deep as one of `ndims` (a tensor has at most 8 dimensions),
    # holding `scalar` values. Whether the nesting is regular (rows of one length) is a
    # rule between items that JSON Schema cannot state: a 422 `ragged_tensor`.
    level: dict[str, Any] = {"anyOf": scalar}
    if ndims.stop == MAX_NDIM + 1:  # at least `start` deep: below that, a value or a list
        for _ in range(MAX_NDIM - ndims.start):
            level = {"anyOf": [*scalar, {"type": "array", "items": level}]}
        for _ in range(ndims.start):
            level = {"type": "array", "items": level}
        return level
    depths: list[dict[str, Any]] = [level] if 0 in ndims else []
    for depth in range(1, ndims.stop):
        level = {"type": "array", "items": level}
        if depth in ndims:
            depths.append(level)
    return depths[0] if len(depths) == 1 else {"anyOf": depths}


def values_schema() -> dict[str, Any]:
    """The published schema of a tensor's values, flat or nested (at most 8 deep), or one
    value: numbers, booleans and the names of non-finite floats."""
    return _values_schema(range(MAX_NDIM + 1), [*_NUMBERS, _NON_FINITE])


def shape_schema() -> dict[str, Any]:
    """The published schema of a tensor's shape: at most 8 sizes, each 0 to 2**63 - 1."""
    return _shape_schema(range(MAX_NDIM + 1))


def tensor_schema(
    ndims: range = range(MAX_NDIM + 1),
    *,
    finite: bool = False,
    null_dtype: bool = True,
    title: str = "Tensor",
) -> dict[str, Any]:
    """The published schema of a wire tensor of ``ndims`` dimensions (``finite``: without
    NaN and infinities; ``null_dtype``: a null dtype of data means none), in each of the
    three forms."""
    scalar = _NUMBERS if finite else [*_NUMBERS, _NON_FINITE]
    any_depth = range(MAX_NDIM + 1)
    nested = {
        "description": (
            "A nested list of numbers or booleans"
            + (" (or one number for a 0-d tensor)" if 0 in ndims else "")
            + f", {_count(ndims)} deep and regular (rows of one length); dtype is inferred "
            "as torch.tensor infers it: ints → int64, any float → float32, bools → bool."
            + ("" if finite else ' Non-finite floats are "NaN", "Infinity", "-Infinity".')
        ),
        **_values_schema(ndims, scalar),
    }
    shaped = _objects(
        "Row-major values and their shape (the product of the sizes is the number of "
        "values), with an optional dtype (or datatype, not both) that the values must fit.",
        {"data": _values_schema(any_depth, scalar), "shape": _shape_schema(ndims)},
        required=("data", "shape"),
        dtype_required=False,
        null_dtype=null_dtype,
    )
    unshaped = _objects(
        "Nested values with an optional dtype (or datatype, not both).",
        {"data": _values_schema(ndims, scalar)},
        required=("data",),
        dtype_required=False,
        null_dtype=null_dtype,
    )
    b64 = _objects(
        "Base64 of the little-endian, C-order bytes; shape and dtype (or datatype, not both) "
        "required, and the bytes must be as many as they say.",
        {
            "b64": {"type": "string", "contentEncoding": "base64", "pattern": BASE64_PATTERN},
            "shape": _shape_schema(ndims),
        },
        required=("b64", "shape"),
        dtype_required=True,
        null_dtype=False,
    )
    return {
        "title": title,
        "description": (
            'A tensor in one of three forms: a nested list; {"data", "shape"?, "dtype"?}; '
            f'or {{"b64", "shape", "dtype"}}; {_count(ndims)} dimensions'
            + (", finite values." if finite else ".")
        ),
        "anyOf": [nested, *shaped, *unshaped, *b64],
    }


def _objects(
    description: str,
    properties: dict[str, Any],
    *,
    required: tuple[str, ...],
    dtype_required: bool,
    null_dtype: bool,
) -> list[dict[str, Any]]:
    # The dtype is named `dtype` or, the Open Inference Protocol's way, `datatype`; never
    # both. One object schema for each spelling, rather than a `not`: schema-driven clients
    # and test generators draw from these more easily.
    dtype = {"enum": [*DTYPE_NAMES, *OIP_DTYPE_NAMES, None]} if null_dtype else DTYPE_SCHEMA
    spellings = {"dtype": dtype, "datatype": {**dtype, "description": _OIP_DTYPE_DOC}}
    return [
        {
            "type": "object",
            "description": description,
            "properties": {**properties, key: schema},
            "required": [*required, key] if dtype_required else list(required),
            "additionalProperties": False,
        }
        for key, schema in spellings.items()
    ]


WIRE_TENSOR_SCHEMA: dict[str, Any] = tensor_schema()
"""A tensor of any dimensions (at most 8) in any of the three forms."""


def whole_shape(value: Any) -> Any:
    # A tensor object's shape holds integers, which may be written 2.0 like any integer; the
    # codec then reads the integers. Only the few sizes are looked at, never the data.
    if isinstance(value, dict) and isinstance(value.get("shape"), list):
        shape = value["shape"]
        if any(isinstance(size, float) and size.is_integer() for size in shape):
            sizes = [int(s) if isinstance(s, float) and s.is_integer() else s for s in shape]
            return {**value, "shape": sizes}
    return value


# Tensor fields are validated by the codec (numpy, one call per tensor), never element by
# element by pydantic: the root type is Any and the schema above documents it.
class Tensor(RootModel[Any]):
    """A tensor in any of the contract's three input forms."""

    root: Annotated[Any, BeforeValidator(whole_shape), WithJsonSchema(WIRE_TENSOR_SCHEMA)]


class Tensor1D(Tensor):
    """A tensor of one dimension (a vector)."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(1, 2), title="Tensor1D")),
    ]


class Tensor2D(Tensor):
    """A tensor of two dimensions (a matrix)."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(2, 3), title="Tensor2D")),
    ]


class Tensor2To3D(Tensor):
    """A tensor of two or three dimensions."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(2, 4), title="Tensor2To3D")),
    ]


class Tensor2To4D(Tensor):
    """A tensor of two to four dimensions."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(2, 5), title="Tensor2To4D")),
    ]


class TensorNonScalar(Tensor):
    """A tensor of at least one dimension."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(1, MAX_NDIM + 1), title="TensorNonScalar")),
    ]


TensorRef = str | Tensor
"""A tensor argument of a step: the name of an input or earlier output, or an inline tensor."""

TensorOrScalar = str | Int | float | Tensor
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
Seed = Annotated[Int, Field(ge=0, description=_SEED_DOC, examples=[0])]

JsonRule = dict[str, Any]
"""A rule between fields, as JSON Schema: what a model's validator checks, published."""


@dataclass(frozen=True)
class BodySpelling:
    """How a body spells a field that is given or left out: in JSON a field left out may
    also be null; in a multipart form it may also be empty, and an upload is a file part."""

    left_out_values: tuple[Any, ...] = (None,)
    files: frozenset[str] = frozenset()

    def given(self, name: str) -> JsonRule:
        if name in self.files:
            return {"required": [name]}
        if "" in self.left_out_values:
            value: JsonRule = {
                "anyOf": [
                    {"type": ["number", "boolean", "array", "object"]},
                    {"type": "string", "minLength": 1},
                ]
            }
        else:
            value = {"type": ["string", "number", "boolean", "array", "object"]}
        return {"required": [name], "properties": {name: value}}

    def left_out(self, name: str) -> JsonRule:
        if name in self.files:
            return {"properties": {name: False}}
        return {"properties": {name: {"enum": list(self.left_out_values)}}}


JSON_BODY = BodySpelling()


def form_body(files: frozenset[str]) -> BodySpelling:
    """A multipart form with the uploads ``files``."""
    return BodySpelling((None, ""), files)


Rule = Callable[[BodySpelling], JsonRule]
"""A rule between fields, spelt for an encoding of the body."""


def _all(rules: list[JsonRule]) -> JsonRule:
    return rules[0] if len(rules) == 1 else {"allOf": rules}


def given(*names: str) -> Rule:
    """Every one of ``names`` is given (present, and not null)."""
    return lambda encoding: _all([encoding.given(name) for name in names])


def none_given(*names: str) -> Rule:
    """None of ``names`` is given (each is left out, or null)."""
    return lambda encoding: _all([encoding.left_out(name) for name in names])


def not_together(*names: str) -> Rule:
    """At most one of ``names`` is given."""
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return lambda encoding: _all(
        [{"anyOf": [encoding.left_out(a), encoding.left_out(b)]} for a, b in pairs]
    )


def one_given(*names: str) -> Rule:
    """At least one of ``names`` is given."""
    return lambda encoding: {"anyOf": [encoding.given(name) for name in names]}


def needs(name: str, requirement: Rule) -> Rule:
    """When ``name`` is given, ``requirement`` holds."""
    return lambda encoding: {"anyOf": [encoding.left_out(name), requirement(encoding)]}


def has_value(name: str, values: tuple[Any, ...], *, default: Any) -> Rule:
    """``name`` holds one of ``values``; left out, it holds ``default``."""

    def rule(encoding: BodySpelling) -> JsonRule:
        if default in values:
            return {"properties": {name: {"enum": [*values, *encoding.left_out_values]}}}
        return {"required": [name], "properties": {name: {"enum": list(values)}}}

    return rule


def when_value(
    name: str, values: tuple[Any, ...], requirement: Rule, *, choices: tuple[Any, ...], default: Any
) -> Rule:
    """When ``name`` (one of ``choices``, ``default`` when left out) holds one of ``values``,
    ``requirement`` holds."""
    others = tuple(choice for choice in choices if choice not in values)
    condition_fails = has_value(name, others, default=default)
    return lambda encoding: {"anyOf": [condition_fails(encoding), requirement(encoding)]}


_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


_LENGTHS = {
    "array": {"minLength": "minItems", "maxLength": "maxItems"},
    "object": {"minLength": "minProperties", "maxLength": "maxProperties"},
}


def _publish_bounds(node: Any) -> None:
    # Every integer is 64-bit (Int); constraints that pydantic applies after a validator
    # come out under their Python names (ge, lt), and lengths of a union of lists or of a
    # validated mapping as a string's (minLength): JSON Schema ignores both, so they are
    # given their JSON Schema names here.
    if isinstance(node, list):
        for item in node:
            _publish_bounds(item)
        return
    if not isinstance(node, dict):
        return
    for python_name, json_name in _BOUNDS.items():
        if python_name in node and node.get("type") in ("integer", "number"):
            node[json_name] = node.pop(python_name)
    if node.get("type") in _LENGTHS:
        for python_name, json_name in _LENGTHS[node["type"]].items():
            if python_name in node:
                node[json_name] = node.pop(python_name)
    elif "type" not in node and "anyOf" in node:
        lengths = {name: node.pop(name) for name in ("minLength", "maxLength") if name in node}
        for option in node["anyOf"] if lengths else ():
            if option.get("type") in _LENGTHS:
                for python_name, value in lengths.items():
                    option.setdefault(_LENGTHS[option["type"]][python_name], value)
    if node.get("type") == "integer":
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = INT64_MIN
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["exclusiveMaximum"] = INT64_END
    for key, value in node.items():
        if key not in ("examples", "default", "const", "enum"):
            _publish_bounds(value)


class StrictModel(BaseModel):
    """Base of every request model: unknown fields are an error, not silently ignored, and
    values are not coerced (``true`` is not the integer 1, ``"3"`` is not the number 3; an
    integer may be written ``3.0``, as JSON Schema's integers may).

    ``SCHEMA_RULES`` publishes, in JSON Schema, the rules between fields that the model's
    validators (or the service) check (``given``, ``not_together``, ``needs``, …), spelt for
    JSON here and for a multipart form by :mod:`service.api.forms`: the published schema then
    admits exactly what the service accepts. Rules JSON Schema cannot state (a name that must
    refer to an earlier result, shapes that must agree) are said in the fields' descriptions.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_KEYS:
            raise _too_long("Object", "keys", MAX_KEYS, len(data))
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        _publish_bounds(target.get("properties", {}))
        rules = [rule(JSON_BODY) for rule in model_rules(cls)]
        if rules:
            target["allOf"] = [*target.get("allOf", []), *rules]
        return schema


def model_rules(model: type[BaseModel]) -> list[Rule]:
    """The rules between the fields of ``model``, its bases' included."""
    return [
        rule
        for klass in reversed(model.__mro__)
        for rule in vars(klass).get("SCHEMA_RULES", ())
        if callable(rule)
    ]


def keys_named(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a mapping field whose keys are a constrained string type:
    pydantic publishes them as ``patternProperties``, which leaves a key that does not match
    free (any value, unchecked); the keys' own schema is ``propertyNames``, with every value
    of the one value type."""
    patterns: Mapping[str, Any] = schema.pop("patternProperties", {})
    if len(patterns) == 1:
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


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
