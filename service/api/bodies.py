"""Large JSON bodies are read in a worker process, never by the server's own interpreter.

Parsing megabytes of JSON holds the interpreter lock for as long as it takes (seconds for a
body of millions of tiny values), which no thread can hide from the event loop. So a body
over :data:`PROCESS_BODY_BYTES` goes to a worker process, which parses and validates it and
writes every large inline tensor back in its compact base64 form (through the codec, so its
dtype and shape are exactly those the server would have read). The server then parses a
body of a few long strings, in microseconds per tensor. A body that fails there comes back
as its JSON error, its validation errors, or the codec's error for the tensor.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, RootModel, ValidationError

from schemas.common import Tensor
from service.codec import decode_tensor, encode_tensor, loads_json
from service.errors import MAX_LISTED_ERRORS, clip
from service.limits import Deadline

PROCESS_BODY_BYTES = 1 << 20
"""JSON bodies larger than this are parsed in a worker process first."""
COMPACT_VALUES = 1024
"""Inline tensors of at least this many JSON values are rewritten as base64."""


@dataclass(frozen=True)
class BodyJob:
    raw: bytes
    model: str
    """``module:QualName`` of the request model."""
    max_elements: int


@dataclass(frozen=True)
class BodyResult:
    """The compact body, or why there is none: the JSON error or the validation errors."""

    body: bytes | None = None
    json_error: tuple[str, int] | None = None
    errors: list[dict[str, Any]] | None = None


def model_path(model: type[BaseModel]) -> str:
    return f"{model.__module__}:{model.__qualname__}"


def _model(path: str) -> type[BaseModel]:
    module, _, name = path.partition(":")
    found = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    assert isinstance(found, type) and issubclass(found, BaseModel)
    return found


def _tensor_roots(value: Any, found: set[int]) -> None:
    """Collect the identity of every inline tensor's JSON value in a validated model."""
    if isinstance(value, Tensor):
        found.add(id(value.root))
    elif isinstance(value, RootModel):
        _tensor_roots(value.root, found)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _tensor_roots(getattr(value, name), found)
    elif isinstance(value, dict):
        for item in value.values():
            _tensor_roots(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _tensor_roots(item, found)


def _values(value: Any, stop: int) -> int:
    """How many JSON values ``value`` holds, counting up to ``stop``."""
    count, stack = 0, [value]
    while stack and count < stop:
        item = stack.pop()
        count += 1
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return count


def _compact(value: Any, where: str, max_elements: int) -> Any:
    """The tensor's base64 form. One the codec refuses is refused here, with the error the
    server would have given (its ``where`` is the value's path in the body)."""
    if _values(value, COMPACT_VALUES) < COMPACT_VALUES:
        return value
    return encode_tensor(decode_tensor(value, max_elements=max_elements, where=where), "b64")


def _rewrite(value: Any, where: str, roots: set[int], max_elements: int) -> Any:
    if id(value) in roots:
        return _compact(value, where, max_elements)
    if isinstance(value, dict):
        return {
            key: _rewrite(item, f"{where}.{key}" if where else key, roots, max_elements)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _rewrite(item, f"{where}.{index}", roots, max_elements)
            for index, item in enumerate(value)
        ]
    return value


def compact_body(job: BodyJob, deadline: Deadline) -> BodyResult:
    """Parse and validate a large body; return it with its large tensors in base64."""
    try:
        data = loads_json(job.raw)
    except orjson.JSONDecodeError as exc:
        return BodyResult(json_error=(exc.msg, exc.pos))
    try:
        model = _model(job.model).model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                **error,
                "loc": ("body", *(clip(p) if isinstance(p, str) else p for p in error["loc"])),
            }
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        return BodyResult(errors=errors[:MAX_LISTED_ERRORS])
    deadline.check()
    roots: set[int] = set()
    _tensor_roots(model, roots)
    if not roots:
        return BodyResult(body=job.raw)
    return BodyResult(body=orjson.dumps(_rewrite(data, "", roots, job.max_elements)))
