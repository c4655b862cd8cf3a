"""Request bodies that are JSON or ``multipart/form-data``: one model, two encodings.

Routes that take an uploaded file (``image``, ``images``, ``archive``, ``file``) read their
body with :func:`parse_body` and declare it with :func:`json_or_form_body`. In a multipart
request every other field is a form field holding a plain value or JSON text
(``kernels`` = ``["edge", "random"]``); both encodings validate against the same model.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from schemas.common import form_body, model_rules
from service.api.binary import (
    BINARY_MEDIA_TYPE,
    FrameReader,
    body_json_error,
    frame_length,
    loads_json_part,
)
from service.api.bodies import Bytes, Tensors, place_tensors, read_by_worker
from service.api.responses import BINARY_RESPONSE_DOC, FRAME_HEADER_DOC
from service.codec import loads_json
from service.config import Settings
from service.errors import (
    FRAME_HEADER,
    ErrorCode,
    InvalidInput,
    MalformedBody,
    UnsupportedMediaType,
)

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
FORM = "multipart/form-data"

INLINE_BODY_BYTES = 16 * 1024
"""Bodies up to this size are parsed and validated on the event loop; larger ones in a
thread, so that megabytes of JSON never stall the loop."""

# Models whose JSON schema the OpenAPI document must carry for json_or_form_body's $refs.
FORM_MODELS: dict[str, type[BaseModel]] = {}


def _is_text(annotation: Any) -> bool:
    """Whether a field only ever holds strings (then a form value is taken as it is)."""
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_text(get_args(annotation)[0])
    if origin is Literal:
        return all(isinstance(arg, str) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return bool(args) and all(_is_text(arg) for arg in args)
    return False


def _text_field(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and _is_text(field.annotation)


def _form_value(model: type[BaseModel], name: str, text: str) -> Any:
    if _text_field(model, name):
        return text
    try:
        return loads_json(text)
    except orjson.JSONDecodeError:
        return text  # a plain word: the model says whether it fits


async def parse_body(
    request: Request,
    model: type[M],
    settings: Settings,
    files: Mapping[str, int] = types.MappingProxyType({}),
) -> tuple[M, dict[str, list[UploadFile]]]:
    """The validated body and the uploaded files by field name.

    ``files`` maps each upload field to how many files it may carry. A JSON body has no
    files. Raises 400 (malformed), 415 (neither JSON nor multipart) or 422 (validation).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, list[UploadFile]] = {}
    json_length = frame_length(request.headers)
    if json_length is not None:
        return await _parse_frame(request, json_length, model), uploads
    if content_type == FORM:
        try:
            form = await request.form(
                # One spare of each, so that one file too many gets our clearer 422.
                # Fields declared as JSON parts (json_or_form_body) come as files too.
                max_files=sum(files.values()) + 1 + len(model.model_fields),
                max_fields=len(model.model_fields) + 1,
                max_part_size=settings.limits.max_body_bytes,
            )
        except MultiPartException as exc:
            raise MalformedBody(f"the multipart body could not be read: {exc.message}") from exc
        texts: dict[str, str] = {}
        for key, item in form.multi_items():
            value = item
            if isinstance(value, UploadFile) and key not in files and key in model.model_fields:
                if (value.content_type or "").split(";")[0].strip().lower() != JSON:
                    raise InvalidInput(
                        f"unexpected file field {key!r}; this route takes "
                        f"{', '.join(repr(name) for name in files) or 'no files'}",
                        code=ErrorCode.UNEXPECTED_FILE,
                    )
                # A field declared with encoding application/json: Swagger UI sends it as a part
                # of that type, with a file name.
                value = (await value.read()).decode("utf-8", errors="replace")
            if isinstance(value, str) and value == "":
                continue  # an empty field is one not given (HTML forms and Swagger UI send them)
            if isinstance(value, UploadFile):
                if key not in files:
                    raise InvalidInput(
                        f"unexpected file field {key!r}; this route takes "
                        f"{', '.join(repr(name) for name in files) or 'no files'}",
                        code=ErrorCode.UNEXPECTED_FILE,
                    )
                uploads.setdefault(key, []).append(value)
                if len(uploads[key]) > files[key]:
                    raise InvalidInput(
                        f"at most {files[key]} file(s) in {key!r}", code=ErrorCode.TOO_MANY_FILES
                    )
            elif key in texts:
                raise InvalidInput(
                    f"form field {key!r} is given twice", code=ErrorCode.DUPLICATE_FIELD
                )
            else:
                texts[key] = value
        return await _form_fields(request, model, texts), uploads
    elif content_type == JSON or content_type.endswith("+json"):
        raw, tensors = await _by_worker(request, await request.body(), model, framed=False)
        if len(raw) > INLINE_BODY_BYTES:  # megabytes of JSON: parse and validate off the loop
            return await run_in_threadpool(_parse_json, raw, model, tensors), uploads
        return _parse_json(raw, model, tensors), uploads
    else:
        raise UnsupportedMediaType(
            f"send the body as {JSON} or, with a file, as {FORM}",
            details={"content_type": content_type or None},
        )


async def _form_fields(request: Request, model: type[M], texts: dict[str, str]) -> M:
    """The form's fields as the model. Each field's text is JSON, or a plain word where it
    is not (:func:`_form_value`). Large texts are read as a JSON body would be: the fields
    as one JSON document, to a body worker when it holds many values (a field that turns
    out not to be JSON goes in again as a string), never on the event loop."""
    if sum(len(text) for text in texts.values()) <= INLINE_BODY_BYTES:
        return _validate({key: _form_value(model, key, text) for key, text in texts.items()}, model)
    words: set[str] = set()
    for _ in range(len(texts) + 1):
        document, spans = await run_in_threadpool(_form_document, model, texts, words)
        try:
            raw, tensors = await _by_worker(request, document, model, framed=False)
            return await run_in_threadpool(_parse_json, raw, model, tensors)
        except MalformedBody as exc:
            position = (exc.details or {}).get("position", -1)
            found = [key for key, (start, end) in spans.items() if start <= position < end]
            if not found:
                raise
            words.add(found[0])  # not JSON: the field is a plain word
    raise AssertionError("unreachable: each try takes one more field as a word")


def _form_document(
    model: type[BaseModel], texts: dict[str, str], words: set[str]
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The fields as a JSON object's text, and where each large field's text is in it: a
    text field (or one in ``words``) as a string, a small one as it reads
    (:func:`_form_value`), a large one as it is."""
    parts: list[bytes] = []
    spans: dict[str, tuple[int, int]] = {}
    size = 1
    for key, text in texts.items():
        head = orjson.dumps(key) + b":"
        large = len(text) > INLINE_BODY_BYTES and key not in words and not _text_field(model, key)
        if large:
            value = text.encode()
            spans[key] = (size + len(head), size + len(head) + len(value))
        else:
            value = orjson.dumps(text if key in words else _form_value(model, key, text))
        parts.append(head + value)
        size += len(head) + len(value) + 1
    return b"{" + b",".join(parts) + b"}", spans


async def _by_worker(
    request: Request, raw: Bytes, model: type[M], framed: bool
) -> tuple[Bytes, Tensors]:
    """A large JSON text of many values, read by a body worker: the text without its large
    tensors, and those decoded with their places in it (in base64 in the text when
    ``framed``: the binary part's tensors take the placeholders' way in)."""
    try:
        return await read_by_worker(request, raw, model, tensors_out=not framed)
    except json.JSONDecodeError as exc:
        raise body_json_error(len(raw), exc.msg, exc.pos, framed) from exc


async def _parse_frame(request: Request, json_length: int, model: type[M]) -> M:
    reader = FrameReader(request, json_length)
    raw, _ = await _by_worker(request, await reader.json_text(), model, framed=True)
    if len(raw) <= INLINE_BODY_BYTES:
        data, refs = loads_json_part(raw)
    else:
        data, refs = await run_in_threadpool(loads_json_part, raw)
    await reader.attach(refs)
    if len(raw) <= INLINE_BODY_BYTES:
        return _validate(data, model)
    return await run_in_threadpool(_validate, data, model)


def _parse_json(raw: Bytes, model: type[M], tensors: Tensors = ()) -> M:
    try:
        data = loads_json(raw)
    except orjson.JSONDecodeError as exc:
        raise body_json_error(len(raw), exc.msg, exc.pos, framed=False) from exc
    place_tensors(data, tensors)
    return _validate(data, model)


def _validate(data: Any, model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from exc


def json_or_form_body(
    model: type[BaseModel], files: Mapping[str, str], multiple: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``openapi_extra`` declaring a body that is ``model`` as JSON, or the same fields as a
    multipart form with the upload fields ``files`` (name → description), so the docs page
    offers a file picker.

    The form's schema is the model's: the same fields with the same constraints and the same
    rules between them (spelt for a form), an upload in place of a field of the same name
    (``image``'s base64 text), no other field. A field that only ever holds text is sent as
    it is and is never null; every other field is JSON text (``encoding`` says so). An empty
    field is one left out."""
    FORM_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                FORM: _form_content(model, files, multiple),
            },
        }
    }


_LEFT_OUT = {"const": "", "description": "Empty: as if the field were left out."}
_ANNOTATIONS = ("title", "description")


def _form_content(
    model: type[BaseModel], files: Mapping[str, str], multiple: frozenset[str]
) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    properties: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    for name, field_schema in schema.get("properties", {}).items():
        if name in files:
            continue  # the JSON form's base64 text: in a form, the upload below
        text = _is_text(model.model_fields[name].annotation)
        properties[name] = _form_field(_without_null(field_schema) if text else field_schema)
        if not text:
            encoding[name] = {"contentType": JSON}
    for name, description in files.items():
        binary = {"type": "string", "format": "binary"}
        properties[name] = (
            {"type": "array", "items": binary, "description": description}
            if name in multiple
            else {**binary, "description": description}
        )
    form: dict[str, Any] = {
        "type": "object",
        "description": schema.get("description", ""),
        "properties": properties,
        "additionalProperties": False,
    }
    required = [name for name in schema.get("required", []) if name not in files]
    if required:
        form["required"] = required
    spelling = form_body(frozenset(files))
    rules = [rule(spelling) for rule in model_rules(model)]
    if rules:  # the rules between fields hold in a form too, spelt for one
        form["allOf"] = rules
    return {"schema": form, "encoding": encoding}


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A field of a form: its JSON schema, or the empty text that stands for leaving it out
    (HTML forms and Swagger UI send every field).

    Swagger UI renders a field by its schema's first alternative (an array gets an editor of
    items, whose empty list it sends as ``[]``) and fills the box with a sample of it (``0``,
    ``[]``, ``string``), which it sends unless cleared. With the empty text first it shows
    one empty text box, where the value is typed as it is sent, and sends nothing for a box
    left empty. (No ``examples`` at the top: schemathesis would combine every field's into
    one request that breaks the rules between fields.)"""
    outer = {key: schema[key] for key in _ANNOTATIONS if key in schema}
    inner = {
        key: value
        for key, value in schema.items()
        if key not in (*_ANNOTATIONS, "default", "examples")
    }
    return {**outer, "anyOf": [_LEFT_OUT, inner]}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A text field's schema without its null alternative: a form's text is never null."""
    options = schema.get("anyOf")
    if not isinstance(options, list) or {"type": "null"} not in options:
        return schema
    rest = [option for option in options if option != {"type": "null"}]
    outer = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if schema.get("default") is not None:
        outer["default"] = schema["default"]
    return {**rest[0], **outer} if len(rest) == 1 else {**outer, "anyOf": rest}


def json_body_doc(model: type[BaseModel], description: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of ``model`` for a route that reads its body
    itself (the V2 inference routes, which also take the binary framing)."""
    FORM_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def add_form_models(schema: dict[str, Any]) -> None:
    """Put the models of :func:`json_or_form_body` bodies into an OpenAPI document, and the
    binary response into every route that takes ``?encoding=binary``; write every bound of
    the document exactly (:func:`_exact_bounds`)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in FORM_MODELS.items():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(def_name, definition)
        components.setdefault(name, model_schema)
    _add_binary_responses(schema)
    _exact_bounds(schema)


_BOUND_KEYS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)


def _exact_bounds(node: Any) -> None:
    # FastAPI's OpenAPI models hold bounds as floats, and a JSON number is read as the decimal
    # it spells: 2**63 written as 9.223372036854776e+18 would be 9223372036854776000, beyond
    # what the service takes. Every whole bound the schemas publish is exact as a float (2**63,
    # -2**63, 2**31 - 1, ...), so it is written back as the integer it is.
    if isinstance(node, list):
        for item in node:
            _exact_bounds(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUND_KEYS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            elif key not in ("example", "examples", "default", "const", "enum"):
                _exact_bounds(value)


def _add_binary_responses(schema: dict[str, Any]) -> None:
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            params = operation.get("parameters", []) if isinstance(operation, dict) else []
            if not any(p.get("name") == "encoding" and p.get("in") == "query" for p in params):
                continue
            ok = operation.get("responses", {}).get("200")
            if ok is not None:
                ok.setdefault("content", {})[BINARY_MEDIA_TYPE] = BINARY_RESPONSE_DOC
                ok.setdefault("headers", {})[FRAME_HEADER] = FRAME_HEADER_DOC
