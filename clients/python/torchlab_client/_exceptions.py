"""Every exception the client raises, and the one function that maps an error answer to one.

The tree::

    TorchlabError                      anything this client raises on purpose
    ├── APIError                       the service answered with an error body
    │   │                              (status_code, code, message, details, request_id)
    │   ├── ValidationError            400, 415, 422: the request is wrong; never retried
    │   │   └── DeviceUnavailableError 422 device_unavailable: that device is not there
    │   ├── TooLargeError              413 *_limit: over a limit (limit, allowed, requested)
    │   ├── UnauthorizedError          401: missing or wrong API key
    │   ├── NotFoundError              404: unknown route or name
    │   ├── RateLimitedError           429 too_many_requests: busy (retry_after); retried
    │   ├── BodyTimeoutError           408 body_timeout: the body did not arrive in time
    │   ├── ComputeTimeoutError        504 timeout: over the service's time limit
    │   └── ServerError                5xx otherwise (a 500 is a bug in the service)
    │       └── DeviceOutOfMemoryError 503 device_out_of_memory: retried
    ├── TransportError                 httpx could not complete the exchange (__cause__ is
    │   │                              httpx's exception); connection errors are retried
    │   ├── ConnectError               could not connect
    │   └── TransportTimeoutError      the client's own timeout ran out
    ├── ProtocolError                  an answer that is not what the contract says
    │   └── ResponseTooLargeError      an answer over the client's max_response_bytes
    └── ClientClosedError              the client (or its httpx client) is closed; also a
                                       RuntimeError, as httpx's own was

The family is chosen by the stable ``code`` of the body (``{"error", "code", "details"}``)
first and the status second, so a proxy's bare 502 still becomes a :class:`ServerError`.
"""

from __future__ import annotations

import email.utils
import html
import json
import math
import re
import time
from typing import Any

import httpx

__all__ = [
    "APIError",
    "ClientClosedError",
    "ComputeTimeoutError",
    "ConnectError",
    "DeviceOutOfMemoryError",
    "DeviceUnavailableError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitedError",
    "ResponseTooLargeError",
    "ServerError",
    "TooLargeError",
    "TorchlabError",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedError",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]


class TorchlabError(Exception):
    """Base of every exception this client raises on purpose."""


class APIError(TorchlabError):
    """The service answered with an error: the contract's ``{"error", "code", "details"}``.

    Attributes:
        status_code: the HTTP status.
        code: the stable snake_case code to branch on (``elements_limit``,
            ``device_unavailable``, ...); ``http_<status>`` when the body was not the
            contract's.
        message: the human-readable ``error``.
        details: machine-readable context (for limits ``limit``, ``allowed``, ``requested``).
        request_id: the ``X-Request-ID`` of the answer, to quote when reporting a bug.
        response: the :class:`httpx.Response` itself.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.response = response
        super().__init__(self._text())

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every validation error the service listed (``details["errors"]``): each with
        ``loc`` (where, e.g. ``["body", "steps", 0, "matmul", "a"]``), ``msg`` and ``type``."""
        listed = self.details.get("errors")
        if not isinstance(listed, list):
            return []
        return [error for error in listed if isinstance(error, dict)]

    def _text(self) -> str:
        """``"<status> <code>: <message>"``, then one line per listed validation error."""
        lines = [f"{self.status_code} {self.code}: {self.message}"]
        errors = self.errors
        if len(errors) > 1 or (errors and _where(errors[0]) not in self.message):
            lines += [f"  - {_where(error)}: {error.get('msg', 'invalid')}" for error in errors]
        return "\n".join(lines)


class ValidationError(APIError):
    """400, 415 or 422: the request is malformed or invalid (shapes that disagree, an
    unknown op, an integer tensor asked for a gradient). Retrying cannot help."""


class DeviceUnavailableError(ValidationError):
    """422 ``device_unavailable``: the device asked for is not present on the service."""


class TooLargeError(APIError):
    """413: over a limit (body size, elements, FLOPs, pixels, steps)."""

    @property
    def limit(self) -> str | None:
        """The limit's name, e.g. ``max_elements``."""
        value = self.details.get("limit")
        return value if isinstance(value, str) else None

    @property
    def allowed(self) -> Any:
        """The limit's value."""
        return self.details.get("allowed")

    @property
    def requested(self) -> Any:
        """What the request would have needed."""
        return self.details.get("requested")


class UnauthorizedError(APIError):
    """401: the API key is missing or wrong."""


class NotFoundError(APIError):
    """404: an unknown route (an older service) or an unknown name (dataset, ...)."""


class RateLimitedError(APIError):
    """429 ``too_many_requests``: the device is busy. ``retry_after`` is the service's hint
    in seconds (from the ``Retry-After`` header), or None."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the service asked to wait before trying again."""
        if self.response is None:
            return None
        return parse_retry_after(self.response.headers.get("retry-after"))


class BodyTimeoutError(APIError):
    """408 ``body_timeout``: the request's body did not reach the service in time (the
    service gives a body ``body_timeout_s``, plus a second for every ``body_min_rate`` bytes
    that arrive), and it closed the connection: an upload too slow for the service's limits.
    Not retried."""


class ComputeTimeoutError(APIError):
    """504 ``timeout``: the computation ran past the service's time limit."""


class ServerError(APIError):
    """A 5xx other than a timeout. A 500 is a bug in the service: quote ``request_id``."""


class DeviceOutOfMemoryError(ServerError):
    """503 ``device_out_of_memory``: the device ran out of memory (and freed it again)."""


class TransportError(TorchlabError):
    """httpx could not complete the exchange; ``__cause__`` is httpx's own exception."""


class ConnectError(TransportError):
    """The service could not be reached."""


class TransportTimeoutError(TransportError):
    """The client's own timeout (the ``timeout`` argument) ran out."""


class ProtocolError(TorchlabError):
    """An answer the client cannot read as the contract says (not JSON, a tensor without a
    shape or with a negative one, a PNG that is not one, a malformed event)."""


class ResponseTooLargeError(ProtocolError):
    """An answer larger than the client's ``max_response_bytes`` (counted as its bytes
    arrive, after any decompression), or declaring so in its ``Content-Length``: the
    answer is given up before it fills memory. ``limit`` is the client's limit in bytes."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message)


class ClientClosedError(TorchlabError, RuntimeError):
    """The client was used after it was closed (or after the httpx client it was given
    was closed). Open a new client, or use it in a ``with`` block."""


def _where(error: dict[str, Any]) -> str:
    """A validation error's place, ``steps.0.matmul.a``, without FastAPI's ``body.``."""
    loc = [str(part) for part in error.get("loc") or []]
    if loc and loc[0] in {"body", "query", "path"}:
        loc = loc[1:]
    return ".".join(loc) or "the request"


MAX_FOREIGN_TEXT = 200
"""The most characters of an error body outside the contract (a proxy's HTML page) quoted
in a message."""

_TAGS = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HIDDEN = re.compile(r"<(script|style|head)[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)


def foreign_text(content: bytes, content_type: str | None = None) -> str:
    """A short quote of a body that is not the contract's: an HTML page's title (else its
    text without tags), whitespace folded, cut to ``MAX_FOREIGN_TEXT`` characters."""
    text = content[: 64 * 1024].decode("utf-8", "replace")
    if "html" in (content_type or "") or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        if title and title.group(1).strip():
            text = title.group(1)
        else:
            text = _TAGS.sub(" ", _HIDDEN.sub(" ", text))
        text = html.unescape(text)
    text = " ".join(text.split())
    if len(text) <= MAX_FOREIGN_TEXT:
        return text
    return f"{text[:MAX_FOREIGN_TEXT]}… (cut; the body has {len(content):,} bytes)"


_BY_CODE: dict[str, type[APIError]] = {
    "validation_error": ValidationError,
    "malformed_body": ValidationError,
    "unsupported_media_type": ValidationError,
    "device_unavailable": DeviceUnavailableError,
    "unauthorized": UnauthorizedError,
    "not_found": NotFoundError,
    "too_many_requests": RateLimitedError,
    "body_timeout": BodyTimeoutError,
    "timeout": ComputeTimeoutError,
    "device_out_of_memory": DeviceOutOfMemoryError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: UnauthorizedError,
    404: NotFoundError,
    408: BodyTimeoutError,
    413: TooLargeError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServerError,
    504: ComputeTimeoutError,
}


def _family(status: int, code: str) -> type[APIError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code.endswith("_limit") or status == 413:
        return TooLargeError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return ValidationError
    return APIError


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer, chosen by its ``code`` (then its status)."""
    status = response.status_code
    code = f"http_{status}"
    message = response.reason_phrase or "error"
    details: dict[str, Any] = {}
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        body = None
        text = foreign_text(response.content, response.headers.get("content-type"))
        if text:
            message = text
    if isinstance(body, dict):
        if isinstance(body.get("code"), str):
            code = body["code"]
        if isinstance(body.get("error"), str):
            message = body["error"]
        elif "detail" in body:  # a plain FastAPI/Starlette answer, outside the contract
            message = foreign_text(str(body["detail"]).encode(), "text/plain")
        if isinstance(body.get("details"), dict):
            details = body["details"]
    cls = _family(status, code)
    return cls(
        status,
        code,
        message,
        details,
        request_id=response.headers.get("x-request-id"),
        response=response,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def transport_error(exc: httpx.TransportError) -> TransportError:
    """Our exception for one of httpx's (raise it ``from`` the original)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return TransportTimeoutError(f"the request timed out: {exc!r}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectError(f"could not connect to the service: {exc}")
    return TransportError(f"the exchange with the service failed: {exc!r}")
