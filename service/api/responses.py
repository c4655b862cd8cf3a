"""Response helpers shared by the routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from schemas.common import ErrorResponse
from service.api.binary import BINARY_MEDIA_TYPE, FRAME_HEADER, BinaryBody, body_view
from service.codec import dumps
from service.waits import Started

logger = logging.getLogger("torchlab.responses")

SEND_CHUNK_BYTES = 1 << 20
"""Bodies go out in pieces of this size, so that a client that stops reading holds at most
one piece in the connection's buffer, not the whole body."""


class PacedBodyResponse(Response):
    """A response sent as its start, then its body in pieces, each within the send timeout
    (``Limits.send_timeout_s``): a client that stops reading is cut off instead of holding
    the body in memory, or the compute slot the response holds, for ever (one that
    pipelines requests and reads nothing leaves the next response waiting to start).
    ``on_sent`` runs once the body is sent or given up (it releases what the response held,
    such as a compute slot)."""

    on_sent: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        timeout = send_timeout(scope)
        try:
            start = {"type": "http.response.start", "status": self.status_code}
            await send_within({**start, "headers": self.raw_headers}, send, timeout)
            for message in body_messages(body):
                await send_within(message, send, timeout)
        except TimeoutError:
            logger.warning(
                "stopped sending a %d-byte response: the client read nothing for %g s",
                len(body),
                timeout,
            )
            return
        finally:
            if self.on_sent is not None:
                self.on_sent()
        if self.background is not None:
            await self.background()


def body_messages(body: bytes | memoryview, more_body: bool = False) -> Iterator[Message]:
    """The ``http.response.body`` messages of ``body``: in pieces of
    :data:`SEND_CHUNK_BYTES`, the last one with ``more_body``.

    A view's pieces (an answer in the shared memory a worker wrote it to) go out as copies:
    the server keeps what the client has not taken yet, and a view of it would keep the
    whole answer's memory for as long as the connection lasts, past the send timeout too.
    """
    if len(body) <= SEND_CHUNK_BYTES:
        piece = bytes(body) if isinstance(body, memoryview) else body
        yield {"type": "http.response.body", "body": piece, "more_body": more_body}
        return
    for start in range(0, len(body), SEND_CHUNK_BYTES):
        end = start + SEND_CHUNK_BYTES
        last = end >= len(body)
        piece = bytes(body[start:end])  # of bytes, the slice is the copy
        yield {"type": "http.response.body", "body": piece, "more_body": more_body or not last}


async def send_within(message: Message, send: Send, timeout: float) -> None:
    """``await send(message)``, given up (``TimeoutError``) after ``timeout`` seconds of
    waiting for the client. While the client reads, a send does not wait (the server waits
    only once its write buffer is full), and so gets no timer (:class:`service.waits.Started`)."""
    sending = Started(send(message))
    if not sending.done:
        async with asyncio.timeout(timeout):
            await sending


def send_timeout(scope: Scope) -> float:
    """The app's ``send_timeout_s`` (30 s outside the app)."""
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return float(settings.limits.send_timeout_s) if settings is not None else 30.0


class FastJSONResponse(PacedBodyResponse, JSONResponse):
    """JSON written by orjson straight from numpy arrays (no pydantic pass over the data)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes | memoryview):
            return content  # type: ignore[return-value]  # memoryview: sent as it is
        return dumps(content)


class PngResponse(PacedBodyResponse):
    media_type = "image/png"


class BinaryResponse(PacedBodyResponse):
    """A framed body of the binary data extension (:mod:`service.api.binary`), sent from
    where the worker process wrote it (shared memory), a copied piece at a time
    (:func:`body_messages`)."""

    media_type = BINARY_MEDIA_TYPE

    def __init__(self, body: BinaryBody) -> None:
        self.framed = body  # keeps the shared memory mapped until the body is sent
        super().__init__(body_view(body), headers={FRAME_HEADER: str(body.json_length)})

    def render(self, content: Any) -> Any:
        return content


BINARY_RESPONSE_DOC: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
"""The 200 body with ``?encoding=binary``, in the OpenAPI document."""
FRAME_HEADER_DOC = {
    "description": "In a binary answer (`?encoding=binary`, or a V2 output asked for in "
    "binary): the length in bytes of the body's JSON part; the tensors' raw bytes follow it.",
    "schema": {"type": "integer", "minimum": 0},
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed body (not JSON).",
        401: "Missing or wrong API key (when keys are configured).",
        408: "The body did not arrive in time: `body_timeout_s`, plus a second for every "
        "`body_min_rate` bytes that arrived. The connection is closed.",
        415: "A body that is not JSON: send `Content-Type: application/json`.",
        413: "Over a limit: body size, elements, FLOPs or steps. `details` names the limit "
        "and the requested amount.",
        422: "Well-formed but invalid: shape mismatch, unknown name or op, a torch error, "
        "a device not available here.",
        429: "Too many requests in flight on the device, or no room for the body among those "
        "held at once (`max_inflight_body_bytes`); retry after `Retry-After` seconds.",
        503: "The device ran out of memory (freed again); retry smaller or elsewhere.",
        504: "Over the request time limit.",
    }
    return {status: {"model": ErrorResponse, "description": text[status]} for status in statuses}


PNG_MEDIA_TYPE = "image/png"

PANEL_HEADERS = {
    "X-Panel-Count": {
        "description": 'With `"format": "png"`: the number of panels.',
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-Panel-Layout": {
        "description": 'With `"format": "png"`: the grid, `<rows>x<columns>`.',
        "schema": {"type": "string", "pattern": r"^\d+x\d+$"},
    },
}


def png_or_json(
    model: type[Any], what: str, *, panels: bool = False, uploads: bool = False
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers JSON (``model``) or, with
    ``"format": "png"``, a picture: the compute errors (with what uploads add to 413 and 415
    when ``uploads``) and the 200 in both media types (with the panel headers when
    ``panels``)."""
    ok: dict[str, Any] = {
        "description": f'JSON, or with `"format": "png"` a PNG image: {what}.',
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
            PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
    if panels:
        ok["headers"] = PANEL_HEADERS
    return {**COMPUTE_ERRORS, **(UPLOAD_ERRORS if uploads else {}), 200: ok}


def png_response(data: bytes, headers: dict[str, str] | None = None) -> PngResponse:
    """A PNG picture as the response."""
    return PngResponse(data, media_type=PNG_MEDIA_TYPE, headers=headers)


COMPUTE_ERRORS = _errors(400, 401, 408, 413, 415, 422, 429, 503, 504)
READ_ERRORS = _errors(401)

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {
        **COMPUTE_ERRORS[413],
        "description": "Over a limit: body size, elements, FLOPs, a picture's pixels (checked "
        "from its header, before decoding), the PNG's pixels, or a zip's entries and sizes "
        "(checked before decompressing). `details` names the limit and the requested amount.",
    },
    415: {
        **COMPUTE_ERRORS[415],
        "description": "The body is neither JSON nor multipart/form-data, or an uploaded or "
        "base64 file is not an allowed picture (PNG, JPEG, BMP, GIF, WebP, TIFF) or not a zip.",
    },
}
