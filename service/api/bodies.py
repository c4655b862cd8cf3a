"""Large JSON bodies are read in a worker process, never by the server's own interpreter.

Parsing megabytes of JSON holds the interpreter lock for as long as it takes (seconds for a
body of millions of tiny values), which no thread can hide from the event loop. So a body
over :data:`PROCESS_BODY_BYTES` with many values in it goes to a worker process, which
parses and validates it and decodes every large inline tensor (through the codec, so its
dtype and shape are exactly those the server would have read). The worker reads the body
with simdjson, large arrays of numbers straight into numpy (:mod:`service.api.jsonarrays`),
and with orjson where simdjson's reading could differ or the body turns out invalid. An
inference request's inputs (``POST /v2/.../infer``) are decoded the same way, each with the
shape and datatype beside its data, after the checks its route makes first. The
tensors come back in shared memory with their paths in the body, where the server puts them
(as it puts a binary request's tensors) in place of their ``null`` placeholders; or, for
the JSON part of a binary request, in base64. The server then parses a small body. A body
that fails there comes back as its JSON error, its validation errors, or the codec's error
for the tensor. A large body of few values (long base64 strings) is parsed in a thread
instead (:func:`many_values`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import torch
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, RootModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from schemas.common import Tensor
from schemas.v2 import InferenceRequest
from service.api.binary import SHARED_BLOB_BYTES, Blob, buffers_of, tensor_value
from service.api.jsonarrays import MIN_VALUES, count_bytes, loads_arrays
from service.api.v2inputs import check_inputs
from service.codec import decode_tensor, encode_tensor, loads_json
from service.errors import BODY_ERRORS_KEY, MAX_LISTED_ERRORS, LimitExceeded, clip
from service.limits import Deadline
from service.ops.v2.handlers import input_where

PROCESS_BODY_BYTES = 1 << 20
"""JSON bodies larger than this, of :data:`PROCESS_BODY_VALUES` values or more, are parsed
in a worker process first."""
PROCESS_BODY_VALUES = 1 << 16
"""A large body with fewer values and escapes than this (commas and backslashes), such as a
few long base64 strings, is parsed in a thread of the server: in milliseconds, much less
than the trip to a worker..."""
THREAD_BODY_BYTES = 8 << 20
"""...up to this size: the strings of a larger one (a 20 MB object key) are copied several
times over while it is read and its errors worded, each copy holding the interpreter."""


def many_values(raw: bytes | bytearray | memoryview) -> bool:
    """Whether the body goes to a worker: over :data:`THREAD_BODY_BYTES`, or with
    :data:`PROCESS_BODY_VALUES` commas and backslashes or more (counted by numpy, which lets
    go of the interpreter lock: call it in a thread)."""
    if len(raw) > THREAD_BODY_BYTES:
        return True
    return count_bytes(raw, ord(","), ord("\\")) >= PROCESS_BODY_VALUES


COMPACT_VALUES = MIN_VALUES
"""Inline tensors of at least this many JSON values are decoded by the worker."""
COMPACT_B64_CHARS = 4 * COMPACT_VALUES
"""Base64 tensors of at least this many characters are decoded by the worker."""


@dataclass(frozen=True)
class BodyJob:
    raw: Blob
    model: str
    """``module:QualName`` of the request model."""
    max_elements: int
    tensors_out: bool = True
    """Large tensors come back decoded (``BodyResult.tensors``), else in base64."""
    max_values: int = 1 << 62
    """At most this many values outside the tensors (``max_body_values``)."""
    max_lists: int = 1 << 62
    """At most this many lists and objects (``max_body_lists``)."""


@dataclass(frozen=True)
class BodyResult:
    """The compact body, or why there is none: the JSON error or the validation errors."""

    body: Blob | None = None
    """The body rewritten; ``None`` with no error: the body as it was sent."""
    tensors: list[tuple[Path, torch.Tensor]] = field(default_factory=list)
    """The decoded tensors and their places in the body (``null`` there)."""
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


@dataclass(frozen=True)
class Root:
    """How a tensor's JSON value in the body is read: as a tensor (``{}``), or as the data
    of a tensor whose other keys (``shape``, ``dtype``) are beside it in the body (an
    inference request's input), named ``where`` in its errors."""

    sides: dict[str, Any] = field(default_factory=dict)
    where: str | None = None


Roots = dict[int, Root]
"""Each tensor's JSON value in the body, by identity."""


def _tensor_roots(value: Any, found: Roots) -> None:
    """Collect every inline tensor's JSON value in a validated model."""
    if isinstance(value, Tensor):
        found[id(value.root)] = Root()
    elif isinstance(value, InferenceRequest):
        # Its errors come before any tensor's, as on the route.
        check_inputs(value, binary_pending=True)
        for entry in value.inputs:
            if entry.data is not None:
                sides = {"shape": entry.shape, "dtype": entry.datatype}
                found[id(entry.data)] = Root(sides, input_where(entry.name))
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


def _values(value: Any, stop: int, roots: Roots | None = None) -> int:
    """How many JSON values ``value`` holds (outside the tensors in ``roots``), counting up
    to ``stop``."""
    count, stack = 0, [value]
    while stack and count < stop:
        item = stack.pop()
        if roots is not None and id(item) in roots:
            continue
        count += 1
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return count


def _large(value: Any) -> bool:
    if isinstance(value, dict):
        text = value.get("b64")
        if isinstance(text, str):
            return len(text) >= COMPACT_B64_CHARS
        value = value.get("data")
    if isinstance(value, np.ndarray):
        return True
    return _values(value, COMPACT_VALUES) >= COMPACT_VALUES


Path = tuple[str | int, ...]
"""Keys and indexes from the body's top to a value."""
Convert = Callable[[Any, Path, Root], Any]
"""Rewrites a large tensor's JSON value, given its path in the body."""


def _decode(value: Any, path: Path, root: Root, max_elements: int) -> torch.Tensor:
    # One the codec refuses is refused here, with the error the server would have given.
    where = root.where or ".".join(str(part) for part in path)
    wire = {"data": value, **root.sides} if root.sides else value
    return decode_tensor(wire, max_elements=max_elements, where=where)


def _rewrite(value: Any, path: Path, roots: Roots, convert: Convert) -> Any:
    """``value`` with each large tensor in ``roots`` converted."""
    root = roots.get(id(value))
    if root is not None:
        return convert(value, path, root) if _large(value) else value
    if isinstance(value, dict):
        return {key: _rewrite(item, (*path, key), roots, convert) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, (*path, index), roots, convert) for index, item in enumerate(value)]
    return value


def place_tensors(data: Any, tensors: Sequence[tuple[Path, torch.Tensor]]) -> None:
    """Put decoded tensors back in the parsed body, in the form a binary request's take."""
    for path, tensor in tensors:
        container = data
        for part in path[:-1]:
            container = container[part]
        container[path[-1]] = tensor_value(tensor)


class _Reread(Exception):
    """The body read by simdjson is not as the server reads it: read it with orjson."""


def check_lists(raw: Bytes, allowed: int) -> None:
    """Refuse a text of more than ``allowed`` lists and objects, counted by their ``[`` and
    ``{`` (those inside strings too) before a parser builds any (``max_body_lists``)."""
    found = count_bytes(raw, ord("["), ord("{"))
    if found > allowed:
        raise LimitExceeded(
            "max_body_lists",
            allowed,
            found,
            "the body",
            message=f"the body holds {found:,} lists and objects (tensors' rows included) but "
            f"the limit max_body_lists is {allowed:,}; send large tensors as base64 "
            '({"b64", "shape", "dtype"}) or in the binary framing',
        )


def compact_body(job: BodyJob, deadline: Deadline) -> BodyResult:
    """Parse and validate a large body; return it with its large tensors decoded (or in
    base64)."""
    model = _model(job.model)
    check_lists(job.raw.view(), job.max_lists)
    read = loads_arrays(job.raw.view())
    if read is not None:
        data, arrays = read
        try:
            return _compact(data, model, job, deadline, arrays=arrays > 0)
        except _Reread:
            pass
    try:
        data = loads_json(job.raw.view())
    except orjson.JSONDecodeError as exc:
        return BodyResult(json_error=(exc.msg, exc.pos))
    return _compact(data, model, job, deadline, arrays=False)


def _compact(
    data: Any, model: type[BaseModel], job: BodyJob, deadline: Deadline, *, arrays: bool
) -> BodyResult:
    """``arrays``: some of ``data``'s lists are numpy arrays already. Anything but the way
    to a valid body with each of them decoded as a tensor is read again (:class:`_Reread`),
    so errors are worded from the body as orjson reads it."""
    try:
        validated = model.model_validate(data)
    except Exception as exc:
        # With arrays, anything from a validator that met one is read again (a TypeError
        # is not a ValidationError).
        if arrays:
            raise _Reread from None
        if not isinstance(exc, ValidationError):
            raise
        errors = [
            {
                **error,
                "loc": ("body", *(clip(p) if isinstance(p, str) else p for p in error["loc"])),
            }
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        return BodyResult(errors=errors[:MAX_LISTED_ERRORS])
    deadline.check()
    roots: Roots = {}
    _tensor_roots(validated, roots)
    # The server builds every value outside the tensors as an object, holding the
    # interpreter lock: their number is bounded before it parses the body.
    values = _values(data, job.max_values + 1, roots)
    if values > job.max_values:
        raise LimitExceeded(
            "max_body_values",
            job.max_values,
            values,
            "the body",
            message=f"the body holds more than {job.max_values:,} values outside its tensors "
            f"(steps, inputs, names, parameters) but the limit max_body_values is "
            f"{job.max_values:,}",
        )
    if not roots:
        return BodyResult()  # the server reads the body itself
    tensors: list[tuple[Path, torch.Tensor]] = []

    def take(value: Any, path: Path, root: Root) -> None:
        tensors.append((path, _decode(value, path, root, job.max_elements)))

    def to_b64(value: Any, path: Path, root: Root) -> Any:
        return encode_tensor(_decode(value, path, root, job.max_elements), "b64")

    body = _rewrite(data, (), roots, take if job.tensors_out else to_b64)
    try:
        text = orjson.dumps(body)
    except orjson.JSONEncodeError:
        if arrays:  # an array read into numpy where no tensor is
            raise _Reread from None
        raise
    return BodyResult(body=Blob(text), tensors=tensors)


# -- the server's side -------------------------------------------------------------------------

Bytes = bytes | bytearray | memoryview
Tensors = Sequence[tuple[Path, torch.Tensor]]


async def goes_to_worker(raw: Bytes) -> bool:
    """Whether a JSON text is read by a body worker: over :data:`PROCESS_BODY_BYTES` with
    many values (:func:`many_values`, counted in a thread)."""
    return len(raw) > PROCESS_BODY_BYTES and await run_in_threadpool(many_values, raw)


async def compact_in_worker(
    request: Request, raw: Bytes, model: type[BaseModel], *, tensors_out: bool
) -> tuple[Bytes, Tensors] | None:
    """The body read by a worker process (:mod:`service.api.bodies`): its text with the large
    tensors taken out, and those tensors decoded with their places in it (``tensors_out``),
    or in base64 in the text; ``None`` when it is invalid, its errors left in the scope.
    Without worker processes (``isolate`` off) the body is returned as it is."""
    settings = request.app.state.settings
    if not settings.isolate:
        return raw, ()
    # Copied into shared memory in a thread (the copy, and the page faults of tens of MB
    # of fresh memory, would hold up the event loop; neither holds the interpreter lock):
    # into one of the buffers of binary bodies, used again from one request to the next,
    # which is taken here, on the loop (the pool is not shared with threads).
    buffers = buffers_of(request)
    into = buffers.take(len(raw)) if buffers and len(raw) > SHARED_BLOB_BYTES else None
    blob = await run_in_threadpool(Blob(raw).share, into)
    limits = settings.limits
    job = BodyJob(
        blob,
        model_path(model),
        limits.max_elements,
        tensors_out,
        limits.max_body_values,
        limits.max_body_lists,
    )
    result: BodyResult = await request.app.state.devices.run_body(compact_body, job)
    if result.json_error is not None:
        message, position = result.json_error
        raise json.JSONDecodeError(message, "", position)
    if result.errors is not None:
        request.scope[BODY_ERRORS_KEY] = result.errors
        return None
    if result.body is None:  # nothing to change: the body as it was sent
        return raw, ()
    return result.body.view(), result.tensors


async def read_by_worker(
    request: Request, raw: Bytes, model: type[BaseModel], *, tensors_out: bool
) -> tuple[Bytes, Tensors]:
    """A JSON text as :func:`compact_in_worker` leaves it when it goes to a body worker
    (:func:`goes_to_worker`), else as it is. Raises :class:`json.JSONDecodeError`, and
    ``RequestValidationError`` with the worker's validation errors."""
    if not await goes_to_worker(raw):
        return raw, ()
    compact = await compact_in_worker(request, raw, model, tensors_out=tensors_out)
    if compact is None:
        raise RequestValidationError(request.scope.pop(BODY_ERRORS_KEY))
    return compact
