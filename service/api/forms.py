"""Request bodies that are JSON or ``multipart/form-data``: one model, two encodings.

Routes that take an uploaded file (``image``, ``images``, ``archive``, ``file``) read their
body with :func:`parse_body` and declare it with :func:`json_or_form_body`. In a multipart
request every other field is a form field holding a plain value or JSON text
(``kernels`` = ``["edge", "random"]``); both encodings validate against the same model.
"""

from __future__ import annotations

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

from service.config import Settings
from service.errors import ErrorCode, InvalidInput, MalformedBody, UnsupportedMediaType

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


def _form_value(model: type[BaseModel], name: str, text: str) -> Any:
    field = model.model_fields.get(name)
    if field is not None and _is_text(field.annotation):
        return text
    try:
        return orjson.loads(text)
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
        data: dict[str, Any] = {}
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
            elif key in data:
                raise InvalidInput(
                    f"form field {key!r} is given twice", code=ErrorCode.DUPLICATE_FIELD
                )
            else:
                data[key] = _form_value(model, key, value)
    elif content_type == JSON or content_type.endswith("+json"):
        raw = await request.body()
        if len(raw) > INLINE_BODY_BYTES:  # megabytes of JSON: parse and validate off the loop
            return await run_in_threadpool(_parse_json, raw, model), uploads
        return _parse_json(raw, model), uploads
    else:
        raise UnsupportedMediaType(
            f"send the body as {JSON} or, with a file, as {FORM}",
            details={"content_type": content_type or None},
        )
    return _validate(data, model), uploads


def _parse_json(raw: bytes, model: type[M]) -> M:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody("the request body is not valid JSON") from exc
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
    offers a file picker."""
    FORM_MODELS[model.__name__] = model
    properties: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    for name, description in files.items():
        binary = {"type": "string", "format": "binary"}
        properties[name] = (
            {"type": "array", "items": binary, "description": description}
            if name in multiple
            else {**binary, "description": description}
        )
    for name, field in model.model_fields.items():
        if name in files:  # the JSON form's base64 text: in a form, the file picker above
            continue
        properties[name] = {
            "type": "string",
            "description": f"{field.description or name} (a plain value or JSON text)",
            "examples": [""],
        }
        if not _is_text(field.annotation):
            encoding[name] = {"contentType": JSON}
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                FORM: {
                    "schema": {"type": "object", "properties": properties},
                    "encoding": encoding,
                },
            },
        }
    }


def add_form_models(schema: dict[str, Any]) -> None:
    """Put the models of :func:`json_or_form_body` bodies into an OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in FORM_MODELS.items():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(def_name, definition)
        components.setdefault(name, model_schema)
