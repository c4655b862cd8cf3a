"""Errors that carry their HTTP status and stable code, and the one map that renders them.

Every error response has the contract's shape ``{"error", "code", "details"}``; nothing but
the handlers registered by :func:`install_error_handlers` builds one.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger("torchlab.errors")


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code is not None:
            self.code = code
        self.headers = headers or {}


class MalformedBody(ServiceError):
    status_code = 400
    code = "malformed_body"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class LimitExceeded(ServiceError):
    """Over a limit; ``details`` names the limit, its value and the requested amount."""

    status_code = 413
    code = "limit_exceeded"

    UNITS = {
        "max_elements": "elements",
        "max_total_elements": "elements",
        "max_flops": "FLOPs",
        "max_steps": "steps",
        "max_plot_points": "points",
        "max_image_pixels": "pixels",
        "max_png_pixels": "pixels",
        "max_archive_entries": "entries",
        "max_archive_entry_bytes": "bytes",
        "max_archive_bytes": "bytes",
        "max_csv_rows": "rows",
        "max_csv_columns": "columns",
        "max_classes": "classes",
        "max_body_bytes": "bytes",
    }

    def __init__(self, limit: str, allowed: float, requested: float, what: str) -> None:
        amount = f"{_fmt(requested)} {self.UNITS.get(limit, '')}".rstrip()
        super().__init__(
            f"{what} needs {amount} but the limit {limit} is {_fmt(allowed)}",
            details={"limit": limit, "allowed": allowed, "requested": requested},
            code=f"{limit.removeprefix('max_')}_limit",
        )
        self.limit = limit


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidInput(ServiceError):
    """Well-formed but invalid: shapes that disagree, an unknown name, a bad dtype."""

    status_code = 422
    code = "invalid_input"


class TensorDecodeError(InvalidInput):
    code = "invalid_tensor"


class DeviceUnavailable(InvalidInput):
    code = "device_unavailable"


class OpError(InvalidInput):
    """torch refused an operation; the message is torch's own, prefixed by where it happened."""

    code = "op_failed"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "too_many_requests"


class DeviceOutOfMemory(ServiceError):
    status_code = 503
    code = "device_out_of_memory"


class ComputeTimeout(ServiceError):
    status_code = 504
    code = "timeout"


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}"


def error_response(
    status: int,
    message: str,
    code: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The contract's error body. Used by the handler map and the ASGI middlewares."""
    body = orjson.dumps(
        {"error": message, "code": code, "details": details or {}},
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=str,
    )
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # pydantic's "input" can be a whole tensor: echoing megabytes back helps nobody.
    return [{key: err[key] for key in ("loc", "msg", "type") if key in err} for err in exc.errors()]


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
    return error_response(exc.status_code, exc.message, exc.code, exc.details, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_details(exc)
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(
            400, "the request body is not valid JSON", "malformed_body", {"errors": errors}
        )
    if _is_unparsed_body(request, errors):
        return error_response(
            415,
            "the body was not read as JSON: send 'Content-Type: application/json'",
            "unsupported_media_type",
            {"content_type": request.headers.get("content-type")},
        )
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
    return error_response(422, message, "validation_error", {"errors": errors})


def _is_unparsed_body(request: Request, errors: list[dict[str, Any]]) -> bool:
    # FastAPI parses a body as JSON only when its Content-Type says so (a CSRF guard); any
    # other body reaches validation as raw bytes and fails as a whole.
    content_type = request.headers.get("content-type", "")
    is_json = content_type.split(";")[0].strip().endswith("json")
    return not is_json and any(tuple(err.get("loc", ())) == ("body",) for err in errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "malformed_body"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    details: dict[str, Any] = {}
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 413:
        # FastAPI's streaming limiter: the body grew past the limit while it was read.
        allowed = request.app.state.settings.max_body_bytes
        code = "body_size_limit"
        message = f"the request body is larger than the limit max_body_bytes of {allowed:,} bytes"
        details = {"limit": "max_body_bytes", "allowed": allowed, "requested": f"> {allowed}"}
        _count_refusal(request, "max_body_bytes")
    return error_response(exc.status_code, message, code, details, dict(exc.headers or {}))


async def _unhandled(request: Request, exc: Exception) -> Response:
    request_id = _request_id(request)
    logger.exception("request %s failed with an unhandled error", request_id)
    return error_response(
        500,
        f"internal error; quote request id {request_id} when reporting it",
        "internal_error",
        {"request_id": request_id},
        {"X-Request-ID": request_id},
    )


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the one handler map: every error the app can raise becomes the contract's body."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
