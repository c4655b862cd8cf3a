"""What :class:`~torchlab_client.Client` and :class:`~torchlab_client.AsyncClient` share:
their configuration, encoding a route's request (``_routes``) into an httpx request, and
the readers of tensor answers (``_parsers``). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeAlias, TypeVar

import httpx

from torchlab_client._codec import (
    EncodeStats,
    frame_json,
    read_frame,
    require_torch,
    to_json_values,
)
from torchlab_client._deadline import deadline_seconds
from torchlab_client._exceptions import (
    ClientClosedError,
    ProtocolError,
    ResponseTooLargeError,
    error_from_response,
)
from torchlab_client._images import Upload
from torchlab_client._parsers import FRAMED_ANSWER, json_body
from torchlab_client._progress import EVENT_STREAM, ProgressEvent, ServerEvent, Sink, event_json
from torchlab_client._retry import Retry
from torchlab_client._routes import Request
from torchlab_client._version import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_B64_THRESHOLD = 4096
"""Request tensors of more bytes than this go as raw bytes: after the JSON (the binary data
extension), or as base64 where the body cannot be framed (see ``b64_threshold``)."""
DEFAULT_MAX_RESPONSE_BYTES = 1 << 30
"""The largest answer a client reads (``max_response_bytes``): twice the service's default
``max_response_bytes`` (512 MiB), so that a service configured for larger answers still
fits, while a broken or hostile server cannot fill memory."""
MAX_ERROR_BYTES = 1 << 20
"""The most of an error answer read: the contract's bodies are a few KiB (a validation
error listing every field stays far under); the rest of a larger one is left unread."""
PREALLOCATE_BYTES = 64 << 20
"""A binary answer's buffer is made at most this large before its bytes arrive, then grown
as they come (``bytearray`` overallocates, and on Linux ``realloc`` of a block this large
remaps its pages rather than copying them), so that a ``Content-Length`` alone cannot
make the client allocate: 2 GB were allocated, and zeroed, for a 144-byte answer."""
FRAME_HEADER = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"


class _Unset:
    """The default of :meth:`BaseClient.with_options`' arguments: keep the client's."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

ResponseEncoding: TypeAlias = Literal["auto", "json", "b64", "binary"]
TimeoutTypes: TypeAlias = float | httpx.Timeout | None


@dataclass(frozen=True)
class Encoded:
    """A request as it goes on the wire: a JSON body, or form fields and files."""

    method: str
    path: str
    content: bytes | None = None
    form: dict[str, str] | None = None
    files: list[tuple[str, Upload]] | None = None
    params: dict[str, str] | None = None
    payloads: tuple[memoryview, ...] = ()
    """Tensors' raw bytes to send after ``content`` (its JSON), in the binary framing."""
    events: bool = False
    """Ask for server-sent events of the work's progress (``Accept: text/event-stream``)."""


class FramedContent(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A binary request's body as its parts: the JSON, then each tensor's bytes, sent as
    they are (never joined into one copy); sendable again on a retry."""

    def __init__(self, parts: tuple[bytes | memoryview, ...]) -> None:
        self.parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts  # type: ignore[misc]  # bytes-like: the transports take views

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part  # type: ignore[misc]


def too_large(limit: int, what: str = "the answer") -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"{what} is larger than max_response_bytes={limit:,} bytes (the client's limit: "
        "raise it in the client's options if the service is meant to answer more)",
        limit,
    )


class AnswerBuffer:
    """Where a binary answer is read: one writable buffer (its arrays become views of it),
    filled chunk by chunk: made of the body's ``Content-Length`` up to
    ``PREALLOCATE_BYTES``, then grown by the bytes that arrive; at most ``limit`` bytes."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.response = response
        self.limit = limit
        length = response.headers.get("content-length", "")
        self.length = int(length) if length.isascii() and length.isdigit() else None
        if self.length is not None and self.length > limit:
            raise too_large(limit, f"a binary answer of {self.length:,} bytes")
        self.body = bytearray(min(self.length or 0, PREALLOCATE_BYTES))
        self.filled = 0

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk`` (True: read on)."""
        end = self.filled + len(chunk)
        if self.length is not None and end > self.length:
            raise ProtocolError("a binary answer is longer than its Content-Length")
        if end > self.limit:
            raise too_large(self.limit)
        room = len(self.body) - self.filled
        if len(chunk) <= room:
            self.body[self.filled : end] = chunk
        else:  # past the preallocated part: appended, each byte still copied once
            view = memoryview(chunk)
            self.body[self.filled :] = view[:room]
            self.body += view[room:]
        self.filled = end
        return True

    def finish(self) -> None:
        """Attach the answer's JSON, its tensors as arrays, for the readers."""
        if self.length is not None and self.filled != self.length:
            raise ProtocolError("a binary answer is shorter than its Content-Length")
        length = self.response.headers[FRAME_HEADER]
        if not (length.isascii() and length.isdigit()):
            raise ProtocolError(f"{FRAME_HEADER} is not a length: {length[:40]!r}")
        self.response.extensions[FRAMED_ANSWER] = read_frame(self.body, int(length))


class AnswerBody:
    """Where any other answer is read, chunk by chunk, counted as it arrives (after httpx
    undoes a ``Content-Encoding``: a gzip bomb is stopped at the limit, not inflated): a
    success answer to at most ``limit`` bytes, else :class:`ResponseTooLargeError`; an
    error answer to its first ``MAX_ERROR_BYTES``, the rest left unread."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.response = response
        self.limit = limit if response.is_success else MAX_ERROR_BYTES
        length = response.headers.get("content-length", "")
        if response.is_success and length.isascii() and length.isdigit() and int(length) > limit:
            raise too_large(limit, f"an answer of {int(length):,} bytes")
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once an error answer has given all that is read of it."""
        self.size += len(chunk)
        if self.size > self.limit:
            if self.response.is_success:
                raise too_large(self.limit)
            self.chunks.append(chunk[: len(chunk) - (self.size - self.limit)])
            return False
        self.chunks.append(chunk)
        return True

    def finish(self) -> None:
        """Give the response its content, as ``response.read()`` would have."""
        self.response._content = b"".join(self.chunks)  # what read() sets


def is_framed(response: httpx.Response) -> bool:
    """Whether a success answer is in the binary framing."""
    return response.is_success and FRAME_HEADER in response.headers


def is_event_stream(response: httpx.Response) -> bool:
    """Whether a success answer is a stream of server-sent events (a refusal before the
    work starts is an ordinary answer)."""
    media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return response.is_success and media == EVENT_STREAM


def on_event(sse: ServerEvent, sink: Sink, response: httpx.Response) -> httpx.Response | None:
    """Take one event of a stream: a progress event goes to ``sink`` (``None`` back); the
    result comes back as the JSON answer it stands for; an error event is raised as the
    error its status and body make. Other events (a later version's) are skipped. A
    malformed progress or error event is a :class:`ProtocolError`."""
    if sse.event == "progress":
        sink(ProgressEvent.from_json(sse.data))
        return None
    if sse.event not in ("result", "error"):
        return None
    status = 200
    content = sse.data.encode()
    if sse.event == "error":
        body = event_json(sse.data, "error")
        status = body.pop("status", 500)
        if not (isinstance(status, int) and 400 <= status <= 599):
            raise ProtocolError(f"an error event whose status is not an error's: {status!r:.40}")
        content = json.dumps(body).encode()
    answer = httpx.Response(
        status,
        content=content,
        headers={"content-type": "application/json", **_request_id(response)},
        request=response.request,
    )
    if sse.event == "error":
        raise error_from_response(answer)
    return answer


def _request_id(response: httpx.Response) -> dict[str, str]:
    request_id = response.headers.get("x-request-id")
    return {} if request_id is None else {"x-request-id": request_id}


def base_url_of(
    base_url: str | httpx.URL | None, http_client: httpx.Client | httpx.AsyncClient | None
) -> str | httpx.URL | None:
    """``base_url``, else that of a given httpx client (the environment's comes later)."""
    if base_url is None and http_client is not None and str(http_client.base_url):
        return http_client.base_url
    return base_url


class BaseClient:
    """Configuration, and the encoding and reading both clients share."""

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retries: int | Retry = 2,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = DEFAULT_B64_THRESHOLD,
        response_encoding: ResponseEncoding = "auto",
        as_torch: bool = False,
        binary: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = httpx.URL(
            str(base_url or os.environ.get("TORCHLAB_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        self.api_key = api_key if api_key is not None else os.environ.get("TORCHLAB_API_KEY")
        self.timeout = timeout
        self.deadline_s = deadline_seconds(timeout)
        self.retry = retries if isinstance(retries, Retry) else Retry(total=retries)
        if self.retry.total < 0:
            raise ValueError("retries must be >= 0")
        if b64_threshold < 0:
            raise ValueError("b64_threshold must be >= 0")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be >= 1")
        self.max_response_bytes = max_response_bytes
        if response_encoding not in ("auto", "json", "b64", "binary"):
            raise ValueError("response_encoding must be 'auto', 'json', 'b64' or 'binary'")
        self.b64_threshold = b64_threshold
        self.response_encoding: ResponseEncoding = response_encoding
        self.as_torch = as_torch
        self.binary = binary
        self._owns_http = False
        # identity: the service never compresses, and a compressed answer is one a few KiB
        # of which can inflate to gigabytes
        self.headers: dict[str, str] = {
            "User-Agent": f"torchlab-client/{__version__}",
            "Accept-Encoding": "identity",
        }
        if headers:
            self.headers.update(headers)
        if self.api_key:
            self.headers.setdefault("Authorization", f"Bearer {self.api_key}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r})"

    def with_options(
        self,
        *,
        timeout: TimeoutTypes = UNSET,
        retries: int | Retry = UNSET,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = UNSET,
        response_encoding: ResponseEncoding = UNSET,
        as_torch: bool = UNSET,
        binary: bool = UNSET,
        max_response_bytes: int = UNSET,
    ) -> Self:
        """A client like this one, sharing its connections, with some options changed:
        ``client.with_options(timeout=300, retries=0).benchmark(...)``. Options not given
        are this client's; ``headers`` are added to its headers. Closing the copy does not
        close the connections; closing this client closes them for the copy too."""
        clone = copy.copy(self)
        BaseClient.__init__(
            clone,
            self.base_url,
            api_key=self.api_key,
            timeout=self.timeout if timeout is UNSET else timeout,
            retries=self.retry if retries is UNSET else retries,
            headers={**self.headers, **(headers or {})},
            b64_threshold=self.b64_threshold if b64_threshold is UNSET else b64_threshold,
            response_encoding=(
                self.response_encoding if response_encoding is UNSET else response_encoding
            ),
            as_torch=self.as_torch if as_torch is UNSET else as_torch,
            binary=self.binary if binary is UNSET else binary,
            max_response_bytes=(
                self.max_response_bytes if max_response_bytes is UNSET else max_response_bytes
            ),
        )
        clone._owns_http = False
        return clone

    # --- reading -------------------------------------------------------------------------

    def _reader(
        self,
        parse: Callable[[dict[str, Any], bool], T],
        as_torch: bool | None,
        request: Request | None = None,
    ) -> Callable[[httpx.Response], T]:
        """The reader of an answer with tensors; checks that torch is there for
        ``as_torch`` before anything is sent. The answer is read as ``request`` named
        things (a table's columns)."""
        wants_torch = self.as_torch if as_torch is None else as_torch
        if wants_torch:
            require_torch()
        if request is None:
            return lambda response: parse(json_body(response), wants_torch)
        return lambda response: parse(request.answer(json_body(response)), wants_torch)

    def _read(self, read: Callable[[httpx.Response], T], response: httpx.Response) -> T:
        """``read(response)``, a malformed answer (a missing key, a value of the wrong
        type, JSON nested too deep) raised as the :class:`ProtocolError` it is."""
        try:
            return read(response)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ProtocolError(
                f"{response.request.method} {response.request.url.path}: the answer does not "
                f"follow the contract ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc

    def _check_open(self, http: httpx.Client | httpx.AsyncClient) -> None:
        """Refuse to send through a closed httpx client, in the client's own terms."""
        if http.is_closed:
            raise ClientClosedError(
                f"this {type(self).__name__} is closed (or the httpx client given to it is): "
                "make a new one, or use it in a `with` block and call it inside"
            )

    # --- encoding ------------------------------------------------------------------------

    def _encoding(self, events: bool = False) -> dict[str, str]:
        """The query asking for binary tensors (``auto`` with ``binary``) or base64 ones,
        unless ``response_encoding="json"``: numpy reads raw bytes in place and decodes
        base64 several times faster than it parses JSON lists. An event's result is JSON:
        base64 for it rather than binary."""
        encoding = self.response_encoding
        if encoding == "auto":
            encoding = "binary" if self.binary and not events else "b64"
        if encoding == "binary" and events:
            encoding = "b64"
        return {} if encoding == "json" else {"encoding": encoding}

    def _encode(self, request: Request, events: bool = False) -> Encoded:
        """Tensors as JSON lists, or (over ``b64_threshold`` bytes) as raw bytes after the
        JSON, base64 in a multipart form or without ``binary``; fields that are None left
        out, and the query asking for binary (or base64) answers when the answer carries
        tensors. ``events``: ask for the work's progress as server-sent events."""
        encoded = self._encode_body(request)
        if not events:
            return encoded
        params = {} if request.png or not request.tensors else self._encoding(events=True)
        return dataclasses.replace(encoded, params=params, events=True)

    def _encode_body(self, request: Request) -> Encoded:
        if request.method == "GET":
            return Encoded(request.method, request.path)
        fields = {name: value for name, value in request.fields.items() if value is not None}
        if request.files:
            form: dict[str, str] = {}
            for name, value in fields.items():
                if isinstance(value, str):
                    form[name] = value  # a plain value: the service reads words as they are
                else:
                    wire = to_json_values(value, self.b64_threshold)
                    form[name] = json.dumps(wire, allow_nan=False, separators=(",", ":"))
            params = {} if request.png or not request.tensors else self._encoding()
            return Encoded(
                "POST", request.path, form=form, files=list(request.files), params=params
            )
        payloads: list[memoryview] | None = [] if self.binary else None
        wire = to_json_values(fields, self.b64_threshold, EncodeStats(), payloads)
        content = json.dumps(wire, allow_nan=False, separators=(",", ":")).encode()
        params = {} if request.png or not request.tensors else self._encoding()
        if payloads:
            content = frame_json(content)
        return Encoded(
            request.method,
            request.path,
            content=content,
            params=params,
            payloads=tuple(payloads or ()),
        )

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, encoded: Encoded
    ) -> httpx.Request:
        accept = (
            EVENT_STREAM if encoded.events else f"application/json, image/png, {BINARY_MEDIA_TYPE}"
        )
        headers = {"Accept": accept, **self.headers}
        if encoded.payloads:
            assert encoded.content is not None
            parts: tuple[bytes | memoryview, ...] = (encoded.content, *encoded.payloads)
            size = len(encoded.content) + sum(payload.nbytes for payload in encoded.payloads)
            headers["Content-Type"] = BINARY_MEDIA_TYPE
            headers[FRAME_HEADER] = str(len(encoded.content))
            headers["Content-Length"] = str(size)
            built = http.build_request(
                encoded.method,
                f"{self.base_url}{encoded.path}",
                params=encoded.params or None,
                headers=headers,
                timeout=self.timeout,
            )
            return httpx.Request(
                built.method,
                built.url,
                headers=built.headers,
                stream=FramedContent(parts),
                extensions=built.extensions,
            )
        if encoded.content is not None:
            headers["Content-Type"] = "application/json"
        return http.build_request(
            encoded.method,
            f"{self.base_url}{encoded.path}",
            content=encoded.content,
            data=encoded.form,
            files=encoded.files,
            params=encoded.params or None,
            headers=headers,
            timeout=self.timeout,
        )
