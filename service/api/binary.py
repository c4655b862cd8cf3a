"""The Open Inference Protocol's binary tensor data extension, in requests and responses.

A request with the header ``Inference-Header-Content-Length: N`` is N bytes of JSON followed
by raw tensor bytes. In the JSON a tensor may be ``{"shape", "dtype", "binary_data_size"}``
(``datatype`` and the protocol's dtype names accepted): it takes the next
``binary_data_size`` bytes of the binary part, in the order the tensors appear in the JSON
text (orjson keeps an object's key order, so a depth-first walk of the parsed JSON meets
them in that order). Bytes are little-endian, C order, no padding; a bool is one byte.

Everything is checked before the binary part is read: the header against the body's
``Content-Length``, each size against its shape and dtype, and the sizes' sum against the
binary part. The binary part is then read into one buffer (when large, shared memory
reused from one request to the next, :class:`SharedBuffers`, so that its tensors reach a
worker process without a copy) and every tensor is a view of it: no per-element work, no
copy.

A response with ``?encoding=binary`` is framed the same way (:func:`frame_body`): the JSON
with each tensor as ``{"shape", "dtype", "binary_data_size"}``, then their bytes in the
same order, and the JSON's length in the ``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from starlette.datastructures import Headers
from starlette.requests import Request

from schemas.common import MAX_TENSORS
from service.codec import (
    DTYPE_NAMES,
    LITTLE_ENDIAN,
    loads_json,
    numel_of,
    parse_dtype,
    parse_shape,
    raw_itemsize,
)
from service.errors import (
    FRAME_HEADER,
    ErrorCode,
    LimitExceeded,
    MalformedBody,
    TensorDecodeError,
)
from service.workers.buffers import new_shared, shared_storage, unused

BINARY_SIZE = "binary_data_size"
BINARY_MEDIA_TYPE = "application/octet-stream"
SHARED_BYTES = 64 * 1024
"""Binary parts larger than this are received into (and responses built in) shared
memory, which crosses to and from the worker processes without being copied."""
KEEP_SHARED_BYTES = 256 << 20
"""Free shared memory kept for the next binary requests (:class:`SharedBuffers`)."""
RELEASE_SHARED_WHEN_IDLE_S = 5.0
"""Once no large body has come for this long, the free shared buffers go back to the system."""
FRAME_ALIGN = 64
"""A framed response's JSON is padded with spaces to a multiple of this, so that the tensors'
bytes start aligned in the reader's buffer."""
TENSOR_KEYS = frozenset({"shape", "dtype", "datatype", BINARY_SIZE})
_MAX_HEADER_DIGITS = 19


def frame_length(headers: Headers) -> int | None:
    """The length of the JSON part of a binary request, or ``None`` without the header.

    A value that is not a non-negative integer, or one larger than the declared body, is a
    400 ``invalid_header_length``."""
    value = headers.get(FRAME_HEADER)
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_HEADER_DIGITS:
        raise MalformedBody(
            f"{FRAME_HEADER} must be the length in bytes of the body's JSON part (a "
            f"non-negative integer), got {value[:40]!r}",
            details={"header": FRAME_HEADER},
            code=ErrorCode.INVALID_HEADER_LENGTH,
        )
    length = int(text)
    declared = content_length(headers)
    if declared is not None and length > declared:
        raise MalformedBody(
            f"{FRAME_HEADER} is {length:,} but the body has only {declared:,} bytes",
            details={"header": FRAME_HEADER, "json_bytes": length, "body_bytes": declared},
            code=ErrorCode.INVALID_HEADER_LENGTH,
        )
    return length


def content_length(headers: Headers) -> int | None:
    """The declared body length, or ``None`` (a chunked body)."""
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


@dataclass(frozen=True)
class BinaryRef:
    """A tensor whose bytes are in the binary part: where they go once read."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    size: int
    where: str
    place: Callable[[torch.Tensor], None]
    """Puts the tensor (a view of the binary part) where the placeholder was."""


def binary_ref(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    size: object,
    where: str,
    place: Callable[[torch.Tensor], None],
) -> BinaryRef:
    """A checked reference: ``size`` a non-negative integer equal to numel × itemsize."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TensorDecodeError(
            f"{where}.{BINARY_SIZE} must be a non-negative integer (bytes), got {size!r:.40}",
            code=ErrorCode.INVALID_TENSOR,
        )
    expected = numel_of(shape) * raw_itemsize(dtype)
    if size != expected:
        raise TensorDecodeError(
            f"{where}: shape {list(shape)} of {DTYPE_NAMES[dtype]} needs {expected:,} bytes, "
            f"{BINARY_SIZE} says {size:,}",
            details={"expected_bytes": expected, "got_bytes": size},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    return BinaryRef(shape, dtype, size, where, place)


def _wire_tensor(
    value: dict[str, Any], where: str, place: Callable[[torch.Tensor], None]
) -> BinaryRef:
    unknown = set(value) - TENSOR_KEYS
    if unknown or "shape" not in value or ("dtype" in value) == ("datatype" in value):
        listed = f"unknown keys {sorted(unknown)[:8]}; " if unknown else ""
        raise TensorDecodeError(
            f"{where}: {listed}a binary tensor is {{'shape', 'dtype' (or 'datatype'), "
            f"'{BINARY_SIZE}'}}",
            code=ErrorCode.INVALID_TENSOR,
        )
    dtype = parse_dtype(value.get("dtype", value.get("datatype")), f"{where}.dtype")
    shape = parse_shape(value["shape"], f"{where}.shape")
    return binary_ref(shape, dtype, value[BINARY_SIZE], where, place)


def tensor_value(tensor: torch.Tensor) -> dict[str, Any]:
    """The JSON value that stands for a tensor already read (what a tensor field takes)."""
    return {"data": tensor, "shape": list(tensor.shape), "dtype": DTYPE_NAMES[tensor.dtype]}


def _placer(container: Any, key: Any) -> Callable[[torch.Tensor], None]:
    def place(tensor: torch.Tensor) -> None:
        container[key] = tensor_value(tensor)

    return place


def check_binary_count(count: int) -> None:
    """At most :data:`MAX_TENSORS` binary tensors in one body (422 ``invalid_tensor``),
    checked as they are found: each is made and placed one by one on the event loop."""
    if count > MAX_TENSORS:
        raise TensorDecodeError(
            f"the JSON part declares more than {MAX_TENSORS:,} binary tensors; a request "
            f"carries at most {MAX_TENSORS:,}",
            details={"allowed": MAX_TENSORS},
        )


def binary_refs(data: Any) -> list[BinaryRef]:
    """Every ``{"shape", "dtype", "binary_data_size"}`` object in the parsed JSON, in the
    order of the JSON text (a depth-first walk in key order), each checked."""
    refs: list[BinaryRef] = []
    holder = [data]
    stack: list[tuple[Any, Any, str]] = [(holder, 0, "body")]
    while stack:
        container, key, where = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            if BINARY_SIZE in value:
                refs.append(_wire_tensor(value, where, _placer(container, key)))
                check_binary_count(len(refs))
                continue
            items: list[tuple[Any, Any, str]] = [
                (value, name, f"{where}.{name}")
                for name, item in value.items()
                if isinstance(item, dict | list)
            ]
        elif isinstance(value, list):
            items = [
                (value, index, f"{where}[{index}]")
                for index, item in enumerate(value)
                if isinstance(item, dict | list)
            ]
        else:
            continue
        stack.extend(reversed(items))
    return refs


def json_part_error(length: int, message: str, position: int) -> MalformedBody:
    """The 400 of a binary request whose JSON part is not JSON."""
    return MalformedBody(
        f"the JSON part of the binary request (the first {length:,} bytes, as {FRAME_HEADER} "
        f"says) is not valid JSON: {message} at byte {position}",
        details={"position": position},
    )


def body_json_error(length: int, message: str, position: int, framed: bool) -> MalformedBody:
    """The 400 of a body that is not JSON: the whole body, or the JSON part of a binary one."""
    if framed:
        return json_part_error(length, message, position)
    return MalformedBody("the request body is not valid JSON", details={"position": position})


def loads_json_part(raw: bytes | bytearray | memoryview) -> tuple[Any, list[BinaryRef]]:
    """The JSON part parsed, and its binary tensors (400 when it is not JSON)."""
    try:
        data = loads_json(raw)
    except orjson.JSONDecodeError as exc:
        raise json_part_error(len(raw), exc.msg, exc.pos) from exc
    return data, binary_refs(data)


def allocate(nbytes: int, shared: bool = True) -> torch.Tensor:
    """A flat uint8 buffer: in shared memory past :data:`SHARED_BYTES` when ``shared``
    (its tensors then cross to another process by reference; in a worker process, one of
    its answer buffers), else private."""
    storage = shared_storage(nbytes) if shared and nbytes > SHARED_BYTES else None
    if storage is None:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).set_(storage)[:nbytes]


SHARED_BLOB_BYTES = 1 << 20
"""A :class:`Blob` larger than this crosses to another process in shared memory."""


class Blob:
    """Bytes (a body) that go to or come from a worker process: by value when small, in
    shared memory past :data:`SHARED_BLOB_BYTES`. Through the socket, pickled, 10 MB cost
    about 20 ms each way on a 2-core machine; in shared memory one copy (a few ms), then
    only its descriptor crosses. :meth:`view` gives the bytes without copying them."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview | torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.numel() if isinstance(self.data, torch.Tensor) else len(self.data)

    def share(self, into: torch.Tensor | None = None) -> Blob:
        """Copy the bytes into shared memory now (when large), not when pickled; once.
        ``into``: a flat uint8 buffer of their length to copy them to, such as one of the
        server's :class:`SharedBuffers` (written before: no page to fault in), else fresh
        shared memory."""
        if not isinstance(self.data, torch.Tensor) and len(self.data) > SHARED_BLOB_BYTES:
            shared = allocate(len(self.data)) if into is None else into
            shared.numpy()[:] = np.frombuffer(self.data, dtype=np.uint8)
            self.data = shared
        return self

    def view(self) -> bytes | bytearray | memoryview:
        if isinstance(self.data, torch.Tensor):
            return self.data.numpy().data
        return self.data

    def __reduce__(self) -> tuple[type[Blob], tuple[Any]]:
        return Blob, (self.share().data,)


class SharedBuffers:
    """Shared memory for binary requests, reused from one request to the next.

    A fresh shared-memory buffer costs the kernel a page fault per page (milliseconds for a
    few MiB); one that was used before costs nothing. A buffer is free again once nothing
    but this pool holds its storage: the request's tensors, in this process, are gone (a
    worker process that mapped it has finished with it before its request's slot is
    released). At most ``keep_bytes`` of free buffers are kept, and none once no large body
    has come for ``idle_s`` seconds (a timer of the event loop the buffers are taken on).
    """

    def __init__(
        self, keep_bytes: int = KEEP_SHARED_BYTES, idle_s: float = RELEASE_SHARED_WHEN_IDLE_S
    ) -> None:
        self.keep_bytes = keep_bytes
        self.idle_s = idle_s
        self._storages: list[torch.UntypedStorage] = []
        self._last_take = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @property
    def kept_bytes(self) -> int:
        """The bytes of the buffers kept, in use or free."""
        return sum(storage.nbytes() for storage in self._storages)

    def take(self, nbytes: int) -> torch.Tensor:
        """A flat uint8 tensor of ``nbytes`` in shared memory (private memory where there
        is none, or for :data:`SHARED_BYTES` or less)."""
        if nbytes <= SHARED_BYTES:
            return torch.empty(nbytes, dtype=torch.uint8)
        self._last_take = time.monotonic()
        self._release_later(self.idle_s)
        fits = [s for s in self._storages if s.nbytes() >= nbytes and unused(s)]
        storage = min(fits, key=lambda s: s.nbytes()) if fits else self._grow(nbytes)
        if storage is None:
            return torch.empty(nbytes, dtype=torch.uint8)
        return torch.empty(0, dtype=torch.uint8).set_(storage)[:nbytes]

    def _grow(self, nbytes: int) -> torch.UntypedStorage | None:
        size = 1 << (nbytes - 1).bit_length()  # a power of two: fewer sizes, more reuse
        kept = sum(s.nbytes() for s in self._storages)
        for old in sorted(self._storages, key=lambda s: -s.nbytes()):
            if kept + size <= self.keep_bytes:
                break
            if unused(old):
                self._storages.remove(old)
                kept -= old.nbytes()
        storage = new_shared(size)
        if storage is not None and kept + size <= self.keep_bytes:
            self._storages.append(storage)
        return storage

    def _release_later(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # taken off any event loop: kept until the next take on one
            return
        if self._timer is not None and self._timer_loop is loop:
            return
        # (A timer of another loop, one that has ended, would never fire.)
        self._timer_loop = loop
        self._timer = loop.call_later(delay, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._timer = None
        idle = time.monotonic() - self._last_take
        if idle >= self.idle_s:
            # The free ones go; one still in use (its answer not yet sent) on a later turn.
            self._storages = [s for s in self._storages if not unused(s)]
        if self._storages:
            self._release_later(self.idle_s - idle if idle < self.idle_s else self.idle_s)


def buffers_of(request: Request) -> SharedBuffers | None:
    """The app's pool of shared buffers (made on first use), or ``None`` when compute runs
    in threads of this process (no worker process to share with)."""
    state = request.app.state
    settings = getattr(state, "settings", None)
    if settings is not None and not settings.isolate:
        return None
    pool: SharedBuffers | None = getattr(state, "shared_buffers", None)
    if pool is None:
        pool = state.shared_buffers = SharedBuffers()
    return pool


def _size_mismatch(refs: Sequence[BinaryRef], total: int, binary: int) -> MalformedBody:
    return MalformedBody(
        f"the tensors' {BINARY_SIZE} add up to {total:,} bytes but the binary part after "
        f"the JSON has {binary:,}",
        details={"expected_bytes": total, "got_bytes": binary, "tensors": len(refs)},
        code=ErrorCode.BINARY_SIZE_MISMATCH,
    )


class FrameReader:
    """Reads a binary request's body: the JSON part, then the binary part into one buffer."""

    def __init__(self, request: Request, json_length: int) -> None:
        self.json_length = json_length
        self.declared = content_length(request.headers)
        self._stream: AsyncIterator[bytes] = request.stream()
        self._pending = b""
        self._buffers = buffers_of(request)
        settings = getattr(request.app.state, "settings", None)
        self.max_body_bytes: int | None = settings and settings.limits.max_body_bytes

    async def json_text(self) -> bytes:
        """The first ``json_length`` bytes (400 if the body ends before)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self._stream:
            parts.append(chunk)
            size += len(chunk)
            if size >= self.json_length:
                break
        data = b"".join(parts)
        if len(data) < self.json_length:
            raise MalformedBody(
                f"{FRAME_HEADER} is {self.json_length:,} but the body has only {len(data):,} bytes",
                details={"json_bytes": self.json_length, "body_bytes": len(data)},
                code=ErrorCode.INVALID_HEADER_LENGTH,
            )
        self._pending = data[self.json_length :]
        return data[: self.json_length]

    async def attach(self, refs: Sequence[BinaryRef]) -> None:
        """Read the binary part and give every reference its tensor. Sizes that do not add
        up to the binary part are a 400 ``binary_size_mismatch``, checked against the
        declared length before anything is allocated; a chunked body (no length declared)
        whose tensors add up to more than ``max_body_bytes`` is a 413, before its buffer is
        taken, as it would be once that much had come."""
        total = sum(ref.size for ref in refs)
        if self.declared is not None:
            if self.declared - self.json_length != total:
                raise _size_mismatch(refs, total, self.declared - self.json_length)
        elif self.max_body_bytes is not None and self.json_length + total > self.max_body_bytes:
            raise LimitExceeded(
                "max_body_bytes",
                self.max_body_bytes,
                self.json_length + total,
                f"the body its tensors declare (the JSON part and their {BINARY_SIZE})",
            )
        if self._buffers is None:
            buffer = torch.empty(total, dtype=torch.uint8)
        else:
            buffer = self._buffers.take(total)
        view = buffer.numpy().data if total else memoryview(bytearray())
        filled = 0
        chunk = self._pending
        while True:
            if chunk:
                end = filled + len(chunk)
                if end > total:  # a chunked body longer than its tensors
                    raise _size_mismatch(refs, total, end)
                view[filled:end] = chunk
                filled = end
            chunk = await anext(self._stream, b"")
            if not chunk and filled == total:
                break
            if not chunk:
                raise _size_mismatch(refs, total, filled)
        offset = 0
        for ref in refs:
            ref.place(tensor_view(buffer, offset, ref))
            offset += ref.size


def tensor_view(buffer: torch.Tensor, offset: int, ref: BinaryRef) -> torch.Tensor:
    """The tensor at ``offset`` of the binary part: a view, or a copy when its offset is
    not a multiple of its itemsize (torch's views must be aligned) or the machine is
    big-endian."""
    part = buffer[offset : offset + ref.size]
    itemsize = raw_itemsize(ref.dtype)
    if offset % itemsize:
        part = part.clone()
    if ref.dtype == torch.bool and ref.size and int(part.max()) > 1:
        raise TensorDecodeError(
            f"{ref.where}: bool bytes must be 0 or 1", code=ErrorCode.INVALID_DATA
        )
    if not LITTLE_ENDIAN and itemsize > 1:
        swapped = part.numpy().view(np.dtype(f"<u{itemsize}")).byteswap()
        part = torch.from_numpy(swapped.view(np.uint8))
    return part.view(ref.dtype).view(ref.shape)


# -- responses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryBody:
    """A framed response body: its JSON part's length, and the body (bytes when small, else
    a flat uint8 tensor in shared memory, which returns from a worker process by reference)."""

    json_length: int
    body: bytes | torch.Tensor

    def __len__(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.numel()


def frame_body(header: bytes, payloads: Sequence[torch.Tensor], shared: bool = False) -> BinaryBody:
    """The JSON ``header`` (its text) followed by ``payloads`` (flat uint8 tensors, in the
    order their tensors appear in the header); in shared memory when ``shared`` (in a worker
    process, whose answer then reaches the server by reference), else as bytes."""
    text = header + b" " * (-len(header) % FRAME_ALIGN)
    size = len(text) + sum(payload.numel() for payload in payloads)
    if not shared or size <= SHARED_BYTES:
        parts = [text, *(payload.numpy().tobytes() for payload in payloads)]
        return BinaryBody(len(text), b"".join(parts))
    out = allocate(size, shared)
    out[: len(text)].numpy()[:] = np.frombuffer(text, dtype=np.uint8)
    offset = len(text)
    for payload in payloads:
        end = offset + payload.numel()
        out[offset:end].copy_(payload)
        offset = end
    return BinaryBody(len(text), out)


def body_view(body: BinaryBody) -> bytes | memoryview:
    """The bytes of a framed body, without copying them."""
    if isinstance(body.body, bytes):
        return body.body
    return body.body.numpy().data
