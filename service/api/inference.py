"""The Open Inference Protocol's inference requests and responses over HTTP (the V2 routes).

A request is JSON, or framed by the binary data extension: then an input whose
``parameters`` hold ``binary_data_size`` takes the next bytes of the binary part, in the
order of ``inputs`` (:mod:`service.api.binary` checks and reads them). Its ``Content-Type``
is not required: Triton's blocking client sends none. The response is the protocol's
(``model_name``, ``model_version``, ``id``, ``outputs``), with ``device`` and ``elapsed_ms``
in its ``parameters``; the output is binary when the request asks so (``binary_data`` on the
output, else ``binary_data_output`` on the request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import torch
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from schemas.v2 import OUTPUT_NAME, InferenceRequest, ResponseEncoding
from service.api.binary import (
    BINARY_SIZE,
    BinaryBody,
    BinaryRef,
    Blob,
    FrameReader,
    binary_ref,
    body_json_error,
    check_binary_count,
    frame_body,
    frame_length,
    tensor_value,
)
from service.api.bodies import Bytes, place_tensors, read_by_worker
from service.api.compute import Envelope
from service.api.forms import INLINE_BODY_BYTES
from service.api.v2inputs import check_inputs
from service.codec import (
    OIP_NAMES,
    dumps,
    encode_tensor,
    loads_json,
    parse_dtype,
    parse_shape,
    raw_bytes,
)
from service.errors import ErrorCode, InvalidInput

DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")


def _loads(raw: Bytes, framed: bool) -> Any:
    try:
        return loads_json(raw)
    except orjson.JSONDecodeError as exc:
        raise body_json_error(len(raw), exc.msg, exc.pos, framed) from exc


def _validate(data: Any) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate(data)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from exc


def _placer(entry: dict[str, Any]) -> Callable[[torch.Tensor], None]:
    def place(tensor: torch.Tensor) -> None:
        entry["data"] = tensor_value(tensor)

    return place


def binary_inputs(data: Any) -> list[BinaryRef]:
    """The inputs whose bytes are in the binary part, in order, each checked (shape,
    datatype, size); an input with both ``data`` and ``binary_data_size`` is a 422."""
    inputs = data.get("inputs") if isinstance(data, dict) else None
    refs: list[BinaryRef] = []
    for index, entry in enumerate(inputs if isinstance(inputs, list) else []):
        params = entry.get("parameters") if isinstance(entry, dict) else None
        if not isinstance(params, dict) or BINARY_SIZE not in params:
            continue
        where = f"inputs[{index}]"
        if entry.get("data") is not None:
            raise InvalidInput(
                f"{where}: give 'data' or parameters.{BINARY_SIZE}, not both",
                code=ErrorCode.INVALID_TENSOR,
            )
        dtype = parse_dtype(entry.get("datatype"), f"{where}.datatype")
        shape = parse_shape(entry.get("shape"), f"{where}.shape")
        refs.append(binary_ref(shape, dtype, params[BINARY_SIZE], where, _placer(entry)))
        check_binary_count(len(refs))
    return refs


async def read_infer_request(request: Request) -> InferenceRequest:
    """The validated inference request, its binary inputs attached (400 malformed, 422
    invalid); the JSON is parsed off the event loop when large, by a worker process when
    it holds many values."""
    json_length = frame_length(request.headers)
    reader = None if json_length is None else FrameReader(request, json_length)
    sent: Bytes = await request.body() if reader is None else await reader.json_text()
    framed = reader is not None
    try:  # a large text of many values: its inputs decoded by a body worker
        raw, tensors = await read_by_worker(request, sent, InferenceRequest, tensors_out=True)
    except json.JSONDecodeError as exc:
        raise body_json_error(len(sent), exc.msg, exc.pos, framed) from exc
    small = len(raw) <= INLINE_BODY_BYTES
    data = _loads(raw, framed) if small else await run_in_threadpool(_loads, raw, framed)
    place_tensors(data, tensors)
    if reader is not None:
        await reader.attach(binary_inputs(data))
    return _validate(data) if small else await run_in_threadpool(_validate, data)


@dataclass(frozen=True)
class InferCall:
    """An inference request in the terms of the ops: wire tensors by input name, the
    parameters, the device, and the output's encoding."""

    inputs: dict[str, Any]
    parameters: dict[str, Any]
    device: str | None
    encoding: ResponseEncoding


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(
            f"{where} must be true or false, got {value!r:.40}", code=ErrorCode.INVALID_PARAM
        )
    return value


def infer_call(body: InferenceRequest, model_name: str) -> InferCall:
    """Inputs as wire tensors (each named once), the device, and whether the output goes
    in binary; an output other than ``output`` is a 422 ``unknown_name``."""
    check_inputs(body)
    inputs: dict[str, Any] = {}
    for entry in body.inputs:
        attached = isinstance(entry.data, dict) and isinstance(entry.data.get("data"), torch.Tensor)
        inputs[entry.name] = (
            entry.data
            if attached
            else {"data": entry.data, "shape": entry.shape, "dtype": entry.datatype}
        )
    parameters = dict(body.parameters or {})
    device = parameters.get("device")
    if device is not None and not (isinstance(device, str) and DEVICE.match(device)):
        raise InvalidInput(
            f"parameters.device must be auto, cpu, cuda or cuda:N, got {device!r:.40}",
            code=ErrorCode.INVALID_PARAM,
        )
    binary = _flag(parameters.get("binary_data_output", False), "parameters.binary_data_output")
    for index, output in enumerate(body.outputs or []):
        if output.name != OUTPUT_NAME:
            raise InvalidInput(
                f"outputs[{index}]: model {model_name} has one output, {OUTPUT_NAME!r}, not "
                f"{output.name[:64]!r}",
                code=ErrorCode.UNKNOWN_NAME,
            )
        if output.parameters and "binary_data" in output.parameters:
            binary = _flag(output.parameters["binary_data"], f"outputs[{index}].binary_data")
    return InferCall(inputs, parameters, device, "binary" if binary else "json")


@dataclass(frozen=True)
class InferMeta:
    """What the response names: the model, its version, the request's id."""

    model: str
    version: str
    id: str | None


def encode_infer_response(
    meta: InferMeta, content: dict[str, Any], envelope: Envelope
) -> bytes | Blob | BinaryBody:
    """The protocol's response of the computed ``output`` (in the worker process): its data
    flat in the JSON, or its bytes after the JSON (``binary``). Written in a worker, a large
    JSON body goes back in shared memory (a :class:`Blob`), as every route's does: pickled
    through the worker's socket it would cost a copy each way, and the worker would hold
    the pickle until its next task."""
    tensor: torch.Tensor = content[OUTPUT_NAME]
    output: dict[str, Any] = {
        "name": OUTPUT_NAME,
        "datatype": OIP_NAMES[tensor.dtype],
        "shape": list(tensor.shape),
    }
    head: dict[str, Any] = {"model_name": meta.model, "model_version": meta.version}
    if meta.id is not None:
        head["id"] = meta.id
    head["parameters"] = {"device": envelope.device, "elapsed_ms": envelope.elapsed_ms}
    head["outputs"] = [output]
    if envelope.encoding == "binary":
        payload = raw_bytes(tensor)
        output["parameters"] = {BINARY_SIZE: payload.numel()}
        return frame_body(dumps(head), [payload], envelope.shared)
    output["data"] = encode_tensor(tensor.reshape(-1), "json")["data"]
    body = dumps(head)
    return Blob(body) if envelope.shared else body
