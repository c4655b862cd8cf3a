"""Errors that carry their HTTP status and stable code, and the one map that renders them.

Every error response has the contract's shape ``{"error", "code", "details"}``; nothing but
the handlers registered by :func:`install_error_handlers` builds one.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from service.waits import PacedBodyResponse

logger = logging.getLogger("torchlab.errors")

FRAME_HEADER = "Inference-Header-Content-Length"
"""The header giving the length of a binary body's JSON part (request and response): a
body with it is read as JSON whatever its ``Content-Type`` says."""


class ErrorCode(StrEnum):
    """Every ``code`` an error response can carry, each with its HTTP status.

    The one registry: errors are raised with a member, never a string, and the README's
    table of codes is generated from this class (``tests/unit/test_errors.py`` keeps it so).
    """

    status: int

    def __new__(cls, value: str, status: int) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    # 400: the request or its body cannot be read
    MALFORMED_BODY = "malformed_body", 400
    MALFORMED_REQUEST = "malformed_request", 400
    INVALID_HEADER_LENGTH = "invalid_header_length", 400
    BINARY_SIZE_MISMATCH = "binary_size_mismatch", 400
    UNSUPPORTED_DATATYPE = "unsupported_datatype", 400
    CORS_REFUSED = "cors_refused", 400
    CHUNKS_TOO_SMALL = "chunks_too_small", 400
    # 401, 404, 405
    UNAUTHORIZED = "unauthorized", 401
    NOT_FOUND = "not_found", 404
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    NOT_ACCEPTABLE = "not_acceptable", 406
    BODY_TIMEOUT = "body_timeout", 408
    HEADER_TIMEOUT = "header_timeout", 408
    # 413: over a limit; ``details`` = {limit, allowed, requested}
    LIMIT_EXCEEDED = "limit_exceeded", 413
    OVER_TIME_BUDGET = "over_time_budget", 413
    BODY_SIZE_LIMIT = "body_size_limit", 413
    BODY_VALUES_LIMIT = "body_values_limit", 413
    BODY_LISTS_LIMIT = "body_lists_limit", 413
    ELEMENTS_LIMIT = "elements_limit", 413
    TOTAL_ELEMENTS_LIMIT = "total_elements_limit", 413
    FLOPS_LIMIT = "flops_limit", 413
    STEPS_LIMIT = "steps_limit", 413
    OBJECTS_LIMIT = "objects_limit", 413
    RESPONSE_BYTES_LIMIT = "response_bytes_limit", 413
    IMAGE_PIXELS_LIMIT = "image_pixels_limit", 413
    PNG_PIXELS_LIMIT = "png_pixels_limit", 413
    PLOT_POINTS_LIMIT = "plot_points_limit", 413
    ARCHIVE_ENTRIES_LIMIT = "archive_entries_limit", 413
    ARCHIVE_ENTRY_BYTES_LIMIT = "archive_entry_bytes_limit", 413
    ARCHIVE_BYTES_LIMIT = "archive_bytes_limit", 413
    CSV_ROWS_LIMIT = "csv_rows_limit", 413
    CSV_COLUMNS_LIMIT = "csv_columns_limit", 413
    CSV_BYTES_LIMIT = "csv_bytes_limit", 413
    CLASSES_LIMIT = "classes_limit", 413
    HESSIAN_ELEMENTS_LIMIT = "hessian_elements_limit", 413
    EXPRESSION_LENGTH_LIMIT = "expression_length_limit", 413
    EXPRESSION_NODES_LIMIT = "expression_nodes_limit", 413
    EXPRESSION_DEPTH_LIMIT = "expression_depth_limit", 413
    # 415: a body or file of a kind the route does not take
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415
    UNSUPPORTED_IMAGE = "unsupported_image", 415
    UNSUPPORTED_ARCHIVE = "unsupported_archive", 415
    # 422: well-formed but invalid
    VALIDATION_ERROR = "validation_error", 422
    INVALID_INPUT = "invalid_input", 422
    INVALID_TENSOR = "invalid_tensor", 422
    INVALID_BASE64 = "invalid_base64", 422
    INVALID_DTYPE = "invalid_dtype", 422
    INVALID_SHAPE = "invalid_shape", 422
    INVALID_DATA = "invalid_data", 422
    INVALID_INDEX = "invalid_index", 422
    INVALID_ARGUMENT = "invalid_argument", 422
    INVALID_PARAM = "invalid_param", 422
    INVALID_NAME = "invalid_name", 422
    INVALID_MODEL = "invalid_model", 422
    INVALID_GROUPS = "invalid_groups", 422
    INVALID_KERNEL_SIZE = "invalid_kernel_size", 422
    INVALID_IMAGE = "invalid_image", 422
    RAGGED_TENSOR = "ragged_tensor", 422
    TOO_MANY_DIMS = "too_many_dims", 422
    SHAPE_MISMATCH = "shape_mismatch", 422
    SIZE_MISMATCH = "size_mismatch", 422
    LENGTH_MISMATCH = "length_mismatch", 422
    CHANNEL_MISMATCH = "channel_mismatch", 422
    NUMBER_OUT_OF_RANGE = "number_out_of_range", 422
    VALUES_TOO_LARGE = "values_too_large", 422
    NON_FINITE = "non_finite", 422
    NOT_SCALAR = "not_scalar", 422
    DEVICE_UNAVAILABLE = "device_unavailable", 422
    OP_FAILED = "op_failed", 422
    UNKNOWN_NAME = "unknown_name", 422
    UNKNOWN_FUNCTION = "unknown_function", 422
    UNKNOWN_PARAM = "unknown_param", 422
    MISSING_PARAM = "missing_param", 422
    UNEXPECTED_ARGUMENT = "unexpected_argument", 422
    EXPRESSION_SYNTAX = "expression_syntax", 422
    EXPRESSION_NOT_ALLOWED = "expression_not_allowed", 422
    INTEGER_GRADIENT = "integer_gradient", 422
    AMBIGUOUS_INPUT = "ambiguous_input", 422
    MISSING_INPUT = "missing_input", 422
    UNEXPECTED_FILE = "unexpected_file", 422
    TOO_MANY_FILES = "too_many_files", 422
    DUPLICATE_FIELD = "duplicate_field", 422
    UNKNOWN_KERNEL = "unknown_kernel", 422
    UNKNOWN_POOL = "unknown_pool", 422
    UNKNOWN_DATASET = "unknown_dataset", 422
    IMAGE_DATASET = "image_dataset", 422
    UNKNOWN_FEATURE = "unknown_feature", 422
    DUPLICATE_FEATURE = "duplicate_feature", 422
    UNKNOWN_TARGET = "unknown_target", 422
    UNKNOWN_COLUMN = "unknown_column", 422
    UNEXPECTED_TARGET = "unexpected_target", 422
    NO_DATA = "no_data", 422
    SEVERAL_SOURCES = "several_sources", 422
    NO_FEATURES = "no_features", 422
    NO_SAMPLES = "no_samples", 422
    NO_TARGETS = "no_targets", 422
    TOO_FEW_SAMPLES = "too_few_samples", 422
    EMPTY_CSV = "empty_csv", 422
    CSV_NOT_TEXT = "csv_not_text", 422
    CSV_NOT_NUMERIC = "csv_not_numeric", 422
    TARGETS_NOT_NUMERIC = "targets_not_numeric", 422
    LABELS_NOT_INTEGERS = "labels_not_integers", 422
    BAD_LABELS = "bad_labels", 422
    SINGLE_CLASS = "single_class", 422
    NOT_CLASSIFICATION = "not_classification", 422
    THRESHOLD_NOT_BINARY = "threshold_not_binary", 422
    DIVERGED = "diverged", 422
    NON_FINITE_FIT = "non_finite_fit", 422
    EMPTY_ARCHIVE = "empty_archive", 422
    CORRUPT_ARCHIVE = "corrupt_archive", 422
    UNSAFE_ARCHIVE_ENTRY = "unsafe_archive_entry", 422
    EMPTY_BATCH = "empty_batch", 422
    TRANSFORM_FAILED = "transform_failed", 422
    CSV_BAD_HEADER = "csv_bad_header", 422
    CSV_MALFORMED = "csv_malformed", 422
    CSV_NO_FEATURES = "csv_no_features", 422
    CSV_NO_HEADER = "csv_no_header", 422
    CSV_RAGGED = "csv_ragged", 422
    KERNEL_SIZE_MISMATCH = "kernel_size_mismatch", 422
    UNKNOWN_TRANSFORM = "unknown_transform", 422
    # 429, 431, 5xx
    TOO_MANY_REQUESTS = "too_many_requests", 429
    HEADER_TOO_LARGE = "header_too_large", 431
    CLIENT_CLOSED_REQUEST = "client_closed_request", 499
    INTERNAL_ERROR = "internal_error", 500
    DEVICE_OUT_OF_MEMORY = "device_out_of_memory", 503
    WORKER_LOST = "worker_lost", 503
    TIMEOUT = "timeout", 504


class ServiceError(Exception):
    """Base of every error the service answers on purpose; its status is its code's."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        code: ErrorCode | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code is not None:
            self.code = code
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.code.status


class ClientLeft(ServiceError):
    """The client closed its connection before its answer: its work was stopped. Nobody
    reads the answer; its status (nginx's 499) is what the logs and metrics show."""

    code = ErrorCode.CLIENT_CLOSED_REQUEST


class MalformedBody(ServiceError):
    code = ErrorCode.MALFORMED_BODY


class Unauthorized(ServiceError):
    code = ErrorCode.UNAUTHORIZED


class NotFound(ServiceError):
    code = ErrorCode.NOT_FOUND


class LimitExceeded(ServiceError):
    """Over a limit; ``details`` names the limit, its value and the requested amount (always
    numbers). ``limit`` is the name of a :class:`service.config.Limits` field; the code is
    derived from it (``max_elements`` → ``elements_limit``)."""

    code = ErrorCode.LIMIT_EXCEEDED

    UNITS = {
        "max_elements": "elements",
        "max_total_elements": "elements",
        "max_flops": "FLOPs",
        "max_steps": "steps",
        "max_objects": "objects",
        "max_response_bytes": "bytes",
        "max_plot_points": "points",
        "max_image_pixels": "pixels",
        "max_png_pixels": "pixels",
        "max_archive_entries": "entries",
        "max_archive_entry_bytes": "bytes",
        "max_archive_bytes": "bytes",
        "max_csv_rows": "rows",
        "max_csv_columns": "columns",
        "max_csv_bytes": "bytes",
        "max_classes": "classes",
        "max_body_bytes": "bytes",
        "max_body_values": "values",
        "max_body_lists": "lists and objects",
        "max_hessian_elements": "elements",
        "max_expression_length": "characters",
        "max_expression_nodes": "nodes",
        "max_expression_depth": "levels",
    }

    def __init__(
        self,
        limit: str,
        allowed: float,
        requested: float,
        what: str,
        *,
        message: str | None = None,
    ) -> None:
        if message is None:
            amount = f"{_fmt(requested)} {self.UNITS.get(limit, '')}".rstrip()
            message = f"{what} needs {amount} but the limit {limit} is {_fmt(allowed)}"
        super().__init__(
            message,
            details={"limit": limit, "allowed": allowed, "requested": requested},
            code=limit_code(limit),
        )
        self.limit = limit


def limit_code(limit: str) -> ErrorCode:
    """The code of a refusal over ``limit``: ``max_elements`` → ``elements_limit``."""
    if limit == "max_body_bytes":
        return ErrorCode.BODY_SIZE_LIMIT
    if limit == "request_timeout_s":  # a plan predicted to run past the time limit
        return ErrorCode.OVER_TIME_BUDGET
    return ErrorCode(f"{limit.removeprefix('max_')}_limit")  # type: ignore[call-arg]


class UnsupportedMediaType(ServiceError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class InvalidInput(ServiceError):
    """Well-formed but invalid: shapes that disagree, an unknown name, a bad dtype."""

    code = ErrorCode.INVALID_INPUT


class TensorDecodeError(InvalidInput):
    code = ErrorCode.INVALID_TENSOR


class DeviceUnavailable(InvalidInput):
    code = ErrorCode.DEVICE_UNAVAILABLE


class OpError(InvalidInput):
    """torch refused an operation; the message is torch's own, prefixed by where it happened."""

    code = ErrorCode.OP_FAILED


class TooManyRequests(ServiceError):
    code = ErrorCode.TOO_MANY_REQUESTS


class DeviceOutOfMemory(ServiceError):
    code = ErrorCode.DEVICE_OUT_OF_MEMORY


class WorkerLost(ServiceError):
    """The worker process computing the request died (out of memory, a crash in native code)."""

    code = ErrorCode.WORKER_LOST


class ComputeTimeout(ServiceError):
    code = ErrorCode.TIMEOUT


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}"


def error_response(
    code: ErrorCode,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The contract's error body, with the code's status. Used by the handler map and the
    ASGI middlewares. Sent as every answer is, within the send timeout: a client that reads
    nothing holds nothing its request took."""
    content = {"error": message, "code": code, "details": details or {}}
    try:
        body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    except orjson.JSONEncodeError:  # an integer past 64 bits (a product of asked sizes)
        body = json.dumps(content, default=str).encode()
    return PacedBodyResponse(
        body, status_code=code.status, media_type="application/json", headers=headers
    )


QUOTE_CHARS = 200
"""The most characters of the caller's own input (a key, a value) an error body quotes."""
MAX_LISTED_ERRORS = 20


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # pydantic's "input" can be a whole tensor and a "loc" a 20 MB key: echoing megabytes
    # back helps nobody, so inputs are left out and the rest is clipped.
    listed = []
    for err in exc.errors()[:MAX_LISTED_ERRORS]:
        entry: dict[str, Any] = {}
        if "loc" in err:
            entry["loc"] = [clip(p) if isinstance(p, str) else p for p in err["loc"]]
        if "msg" in err:
            entry["msg"] = clip(str(err["msg"]), 2 * QUOTE_CHARS)
        if "type" in err:
            entry["type"] = err["type"]
        listed.append(entry)
    return listed


def _count_refusal(request: Request, limit: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.refused.labels(limit).inc()


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    limit = exc.details.get("limit")
    if isinstance(limit, str) and exc.status_code in (413, 429, 504):
        _count_refusal(request, limit)
    if exc.status_code >= 500 and exc.status_code not in (503, 504):
        logger.error("request %s failed: %s", _request_id(request), exc.message)
    return error_response(exc.code, exc.message, exc.details, exc.headers)


E = TypeVar("E", bound=BaseException)


def without_frames(exc: E) -> E:
    """``exc`` without its traceback or the exceptions chained to it, to be kept past its
    ``except`` block (in the request's scope): its traceback holds every frame it passed
    through, and so the request, its scope and its body. Kept in the scope, that makes a
    reference cycle, which only the cyclic collector frees; tens of MB of body at a time."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc


BODY_ERRORS_KEY = "torchlab.body_errors"
"""Where a body validated off the event loop leaves its validation errors, in the ASGI
scope (FastAPI itself then saw no body): they are the ones answered."""


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = request.scope.get(BODY_ERRORS_KEY)
    if isinstance(found, ServiceError):  # met while the body was read off the loop
        return await _service_error(request, found)
    errors = _validation_details(RequestValidationError(found) if found else exc)
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(
            ErrorCode.MALFORMED_BODY, "the request body is not valid JSON", {"errors": errors}
        )
    if _is_unparsed_body(request, errors):
        return error_response(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "the body was not read as JSON: send 'Content-Type: application/json'",
            {"content_type": request.headers.get("content-type")},
        )
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
    return error_response(ErrorCode.VALIDATION_ERROR, message, {"errors": errors})


_UNREAD_BODY_ERRORS = frozenset({"missing", "model_attributes_type", "model_type", "dict_type"})
"""pydantic's error types for a body that is absent or not an object at all."""


def _is_unparsed_body(request: Request, errors: list[dict[str, Any]]) -> bool:
    # FastAPI parses a body as JSON only when its Content-Type says so (a CSRF guard); any
    # other body reaches validation as raw bytes (or as nothing) and fails as a whole: absent,
    # or not an object. A body that was read (a multipart form) can fail as a whole too, by a
    # rule between its fields (a model validator's ``value_error``): that is a 422, not a 415.
    # A binary body's JSON part is read whatever the Content-Type (tritonclient sends none).
    content_type = request.headers.get("content-type", "")
    is_json = content_type.split(";")[0].strip().endswith("json") or FRAME_HEADER in request.headers
    return not is_json and any(
        tuple(err.get("loc", ())) == ("body",) and err.get("type") in _UNREAD_BODY_ERRORS
        for err in errors
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.METHOD_NOT_ALLOWED,
        408: ErrorCode.BODY_TIMEOUT,
        413: ErrorCode.BODY_SIZE_LIMIT,
        429: ErrorCode.TOO_MANY_REQUESTS,  # a chunked body with no room to grow
    }
    code = codes.get(exc.status_code, ErrorCode.MALFORMED_BODY)
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    details: dict[str, Any] = {}
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif code is ErrorCode.METHOD_NOT_ALLOWED:
        # Starlette names the methods of the first route whose path matched; a path served by
        # several routes (GET and POST /activate) takes all of theirs.
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            message = (
                f"{request.url.path} does not take {request.method}; it takes {headers['Allow']}"
            )
            details = {"method": request.method, "allowed": allowed}
    elif code in (ErrorCode.BODY_TIMEOUT, ErrorCode.TOO_MANY_REQUESTS):
        # The body did not arrive in time, or had no room to grow (BodyTimeout, NoRoomForBody
        # of service.middleware; the latter counted where it was raised).
        details = dict(getattr(exc, "details", {}))
        if code is ErrorCode.BODY_TIMEOUT:
            _count_refusal(request, "body_timeout_s")
    elif code is ErrorCode.BODY_SIZE_LIMIT:
        # The streaming limiter: the body grew past the limit while it was read.
        allowed = request.app.state.settings.limits.max_body_bytes
        received = getattr(exc, "received", allowed + 1)
        message = f"the request body is larger than the limit max_body_bytes of {allowed:,} bytes"
        details = {"limit": "max_body_bytes", "allowed": allowed, "requested": received}
        _count_refusal(request, "max_body_bytes")
    return error_response(code, message, details, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app fully matches for this request's path."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _client_left(request: Request, exc: Exception) -> Response:
    """A body the client stopped sending by leaving (``ClientDisconnect``): no bug."""
    return await _service_error(request, ClientLeft("the client closed the connection"))


async def _unhandled(request: Request, exc: Exception) -> Response:
    request_id = _request_id(request)
    logger.exception("request %s failed with an unhandled error", request_id)
    without_frames(exc)  # logged: its frames would keep the request's body until a collection
    return error_response(
        ErrorCode.INTERNAL_ERROR,
        f"internal error; quote request id {request_id} when reporting it",
        {"request_id": request_id},
        {"X-Request-ID": request_id},
    )


async def error_response_of(request: Request, exc: Exception) -> Response:
    """The answer the app gives ``exc`` (counted, logged as the handlers do): its error body
    and status, a 500 ``internal_error`` for an unexpected one. For errors met outside the
    handlers' reach, such as in a stream already started."""
    if isinstance(exc, ServiceError):
        return await _service_error(request, exc)
    return await _unhandled(request, exc)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the one handler map: every error the app can raise becomes the contract's body."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unhandled)
