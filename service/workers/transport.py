"""The wire between the server and its worker processes.

A message is a pickle (``ForkingPickler``, so torch's reductions apply) sent over a Unix
stream socket behind a fixed header. Tensors cross by shared memory: a tensor's storage is
moved into an unlinked shared-memory file once, and that file's descriptor travels beside the
message as ``SCM_RIGHTS`` ancillary data, so the receiver maps the same pages instead of
reading a copy. Small tensors (up to :data:`INLINE_TENSOR_BYTES`) travel by value: for them a
shared-memory file costs more than the bytes.

Descriptors go with the message rather than through multiprocessing's ``resource_sharer``
thread, which needs a connection per descriptor and keeps a descriptor forever when the
process meant to fetch it dies first; descriptors in flight in a socket are released when
the socket closes.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import io
import mmap
import os
import pickle
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing.reduction import ForkingPickler
from typing import Any

import orjson
import torch
import torch.multiprocessing  # registers torch's shared-memory reductions with ForkingPickler
from torch.multiprocessing import reductions

HEADER = struct.Struct("!QIQ")
"""Payload length, number of descriptors, the sender's resident set size in bytes (0 if n/a)."""

MAX_FDS_PER_SEND = 250
"""Descriptors per ``sendmsg`` (the kernel accepts at most 253, ``SCM_MAX_FD``)."""

INLINE_TENSOR_BYTES = 64 * 1024
"""Tensors whose storage is at most this many bytes are pickled by value."""

_FD_SIZE = array.array("i").itemsize
_shared_tensor: Callable[[torch.Tensor], Any] = reductions.reduce_tensor
_shared_storage: Callable[[torch.UntypedStorage], Any] = reductions.reduce_storage
# torch's cache of the storages this process maps, by file (inode, device); weak references.
_file_id: Callable[[int], tuple[int, int]] = reductions.fd_id
_cached_storage: Callable[[type, tuple[int, int]], Any] = reductions.storage_from_cache
weak_storage: Callable[[torch.UntypedStorage], Any] = reductions.StorageWeakRef
"""A weak reference to a storage (``expired()`` once it has died)."""
MADV_POPULATE_READ = 22  # Linux 5.14+
MADV_POPULATE_WRITE = 23


def page_populator(advice: int) -> Callable[[int, int], bool] | None:
    """``madvise(advice)`` over the pages of a range (``MADV_POPULATE_READ`` or ``_WRITE``:
    the pages mapped at once, which costs far less than a page fault on each at first
    touch); true when the kernel took it. ``None`` where there is no ``madvise``."""
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    page = mmap.PAGESIZE

    def populate(address: int, size: int) -> bool:
        start = address - address % page
        result: int = madvise(start, size + address - start, advice)
        return result == 0

    return populate


_populate = page_populator(MADV_POPULATE_READ)
# As plain ints: the socket module's are ``MsgFlag`` members, and ``flags & MSG_CTRUNC`` on
# one makes a new member through the enum's Python code (half a microsecond a receive).
_RECV_FLAGS = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_CTRUNC = int(socket.MSG_CTRUNC)


@dataclass
class Frame:
    """One message: its pickle, the descriptors beside it and the sender's resident set size."""

    payload: bytes | bytearray | memoryview
    fds: list[int]
    rss: int = 0

    def close(self) -> None:
        """Close the descriptors this side still owns."""
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


class CopyTooLarge(Exception):
    """Pickling would copy more tensor bytes into shared memory than the caller allows."""


# -- pickling -------------------------------------------------------------------------------


class _FdCollector:
    """Stands in for a spawning ``Popen`` while pickling: multiprocessing's ``DupFd`` then
    hands each descriptor here (duplicated, so the storage may die before the send) instead
    of to the ``resource_sharer`` thread."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(os.dup(fd))
        return len(self.fds) - 1

    def DupFd(self, index: int) -> PassedFd:  # noqa: N802 (multiprocessing's name)
        return PassedFd(index)


class PassedFd:
    """A descriptor that travels beside the message, by its index among them."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[type[PassedFd], tuple[int]]:
        return PassedFd, (self.index,)

    def detach(self) -> int:
        """The received descriptor; the caller owns it from now on (torch closes it)."""
        return _receiving().claim(self.index)


class _FdReceiver:
    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.claimed: set[int] = set()
        self.storages: list[tuple[int, torch.UntypedStorage]] = []
        """The shared-memory storages rebuilt from the descriptors, with their inodes."""
        self.fresh: set[int] = set()
        """The inodes of those this process did not map already (mapped by this frame)."""

    def claim(self, index: int) -> int:
        if index in self.claimed:
            return os.dup(self.fds[index])
        self.claimed.add(index)
        return self.fds[index]

    def close_unclaimed(self) -> None:
        for index, fd in enumerate(self.fds):
            if index not in self.claimed:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds = []


_local = threading.local()


def _receiving() -> _FdReceiver:
    receiver: _FdReceiver | None = getattr(_local, "receiver", None)
    if receiver is None:
        raise RuntimeError("a passed descriptor can only be unpickled by transport.loads")
    return receiver


@contextlib.contextmanager
def _collecting(collector: _FdCollector) -> Iterator[None]:
    previous = mp_context.get_spawning_popen()
    mp_context.set_spawning_popen(collector)  # type: ignore[arg-type]  # a stand-in
    try:
        yield
    finally:
        mp_context.set_spawning_popen(previous)


def _rebuild_tensor(data: bytes, dtype: torch.dtype, shape: tuple[int, ...], grad: bool) -> Any:
    tensor = torch.empty(shape, dtype=dtype)
    if data:
        flat = tensor.view(-1).view(torch.uint8)
        flat.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return tensor.requires_grad_(grad) if grad else tensor


def _rebuild_storage(cls: type, fd: PassedFd, size: int) -> torch.UntypedStorage:
    """torch's rebuild from a descriptor (``rebuild_storage_fd``): the storage this process
    already maps for that file if it has one (torch's cache, by inode), else a new mapping
    with its pages mapped at once (one ``madvise`` costs far less than a page fault on each
    page at first touch). The storage is noted for :func:`loads`' ``mapped``."""
    global _populate  # noqa: PLW0603 (dropped for good where the kernel refuses it)
    received = fd.detach()
    try:
        key = _file_id(received)
        storage: torch.UntypedStorage | None = _cached_storage(cls, key)
        if storage is None:
            storage = cls._new_shared_fd_cpu(received, size)  # type: ignore[attr-defined]
            reductions.shared_cache[key] = weak_storage(storage)
            _receiving().fresh.add(key[0])
            if _populate is not None and size and not _populate(storage.data_ptr(), size):
                _populate = None
    finally:
        os.close(received)
    _receiving().storages.append((key[0], storage))
    return storage


def _reduce_storage(storage: torch.UntypedStorage) -> Any:
    rebuild, args = _shared_storage(storage)
    if rebuild is reductions.rebuild_storage_fd:
        return _rebuild_storage, args
    return rebuild, args


def _share(tensor: torch.Tensor) -> Any:
    """torch's shared-memory reduction; a full ``/dev/shm`` is a :class:`MemoryError`."""
    try:
        return _shared_tensor(tensor)
    except RuntimeError as exc:
        if "No space left on device" in str(exc):
            raise MemoryError(f"shared memory (/dev/shm) is full: {exc}") from exc
        raise


class _TensorReducer:
    """How a tensor crosses: by value when small, else torch's shared-memory reduction.

    ``copy_limit`` bounds the bytes copied into shared memory (storages not yet shared);
    past it :class:`CopyTooLarge` is raised, so that an event loop can pickle in a thread.
    ``to_cpu`` moves CUDA tensors to the CPU first: a worker's CUDA memory must not outlive
    the worker, and CUDA IPC would tie the result's memory to the worker's life.
    """

    def __init__(self, copy_limit: int | None, to_cpu: bool) -> None:
        self.copy_limit = copy_limit
        self.to_cpu = to_cpu
        self.copied = 0

    def __call__(self, tensor: torch.Tensor) -> Any:
        if tensor.requires_grad and not tensor.is_leaf:
            tensor = tensor.detach()  # the graph cannot cross processes
        if self.to_cpu and tensor.is_cuda:
            tensor = tensor.cpu()
        plain = (
            tensor.device.type == "cpu"
            and tensor.layout == torch.strided
            and not tensor.is_quantized
            and not tensor.is_nested
        )
        if not plain:
            return _share(tensor)
        storage = tensor.untyped_storage()
        if storage.nbytes() <= INLINE_TENSOR_BYTES:
            flat = tensor.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
            data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
            return _rebuild_tensor, (data, tensor.dtype, tuple(tensor.shape), tensor.requires_grad)
        if self.copy_limit is not None and not storage.is_shared():
            self.copied += storage.nbytes()
            if self.copied > self.copy_limit:
                raise CopyTooLarge(self.copied)
        return _share(tensor)


PROGRESS_MARK = b"P"
"""The first byte of a progress frame's payload (a pickle's is its protocol opcode, 0x80)."""


def progress_frame(event: dict[str, Any]) -> Frame:
    """A progress event of the running task (JSON), sent ahead of its result."""
    return Frame(PROGRESS_MARK + orjson.dumps(event), [])


def progress_event(frame: Frame) -> dict[str, Any] | None:
    """The event of a progress frame; ``None`` for any other frame."""
    if frame.fds or not frame.payload or frame.payload[:1] != PROGRESS_MARK:
        return None
    event: dict[str, Any] = orjson.loads(bytes(frame.payload[1:]))
    return event


def dumps(obj: Any, *, copy_limit: int | None = None, to_cpu: bool = False) -> Frame:
    """Pickle ``obj`` for another process: the frame's payload and descriptors.

    Raises :class:`CopyTooLarge` when more than ``copy_limit`` bytes of tensors would be
    copied into shared memory. The caller closes the frame's descriptors once sent.
    """
    collector = _FdCollector()
    buffer = io.BytesIO()
    pickler = ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL)
    reducer = _TensorReducer(copy_limit, to_cpu)
    table: dict[type, Callable[[Any], Any]] = pickler.dispatch_table
    table[torch.Tensor] = reducer
    table[torch.nn.Parameter] = reducer
    table[torch.UntypedStorage] = _reduce_storage
    try:
        with _collecting(collector):
            pickler.dump(obj)
    except BaseException:
        Frame(b"", collector.fds).close()
        raise
    return Frame(buffer.getbuffer(), collector.fds)


Mapped = list[tuple[int, torch.UntypedStorage]]
"""Shared-memory storages a frame's tensors are on, with their files' inodes."""


def loads(frame: Frame, mapped: Mapped | None = None, fresh: set[int] | None = None) -> Any:
    """Unpickle a frame; takes over its descriptors (closing those no object claimed).
    ``mapped`` receives the shared-memory storages that the frame's tensors are on: kept
    alive, they stay mapped, and a later frame with the same files maps nothing. ``fresh``
    receives the inodes of those among them that this frame mapped (the others this
    process mapped already)."""
    receiver = _FdReceiver(frame.fds)
    frame.fds = []
    _local.receiver = receiver
    try:
        return pickle.loads(frame.payload)  # noqa: S301 (the peer is our own process)
    finally:
        _local.receiver = None
        receiver.close_unclaimed()
        if mapped is not None:
            mapped.extend(receiver.storages)
        if fresh is not None:
            fresh.update(receiver.fresh)


# -- framing: blocking (worker side) --------------------------------------------------------


def _fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    return fds


def _rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []


def _chunks(frame: Frame) -> list[tuple[bytes, list[int]]]:
    header = HEADER.pack(len(frame.payload), len(frame.fds), frame.rss)
    step = MAX_FDS_PER_SEND
    groups = [frame.fds[i : i + step] for i in range(0, len(frame.fds), step)]
    # Descriptors ride on the first byte of a sendmsg: the header, then one byte per group more.
    return [(header, groups[0] if groups else []), *((b"\0", group) for group in groups[1:])]


def _checked(fds: list[int], flags: int) -> list[int]:
    if flags & _CTRUNC:
        Frame(b"", fds).close()
        raise OSError("descriptors were dropped in transit (the process is out of descriptors)")
    return fds


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Send a frame on a blocking socket."""
    for data, fds in _chunks(frame):
        sent = sock.sendmsg([data], _rights(fds))
        if sent < len(data):
            sock.sendall(data[sent:])
    sock.sendall(frame.payload)


def _recv_exact_blocking(sock: socket.socket, size: int, fds: list[int]) -> bytes:
    data = b""
    while len(data) < size:
        chunk, ancdata, flags, _ = sock.recvmsg(
            size - len(data), socket.CMSG_SPACE(MAX_FDS_PER_SEND * _FD_SIZE), _RECV_FLAGS
        )
        fds.extend(_checked(_fds_of(ancdata), flags))
        if not chunk:
            raise EOFError("the peer closed the connection")
        data += chunk
    return data


def recv_frame(sock: socket.socket) -> Frame:
    """Receive a frame on a blocking socket; ``EOFError`` when the peer has gone."""
    fds: list[int] = []
    try:
        size, count, rss = HEADER.unpack(_recv_exact_blocking(sock, HEADER.size, fds))
        while len(fds) < count:
            _recv_exact_blocking(sock, 1, fds)
        payload = bytearray(size)
        view = memoryview(payload)
        received = 0
        while received < size:
            got = sock.recv_into(view[received:])
            if not got:
                raise EOFError("the peer closed the connection")
            received += got
    except BaseException:
        Frame(b"", fds).close()
        raise
    return Frame(payload, fds, rss)


# -- framing: on an event loop (server side) ------------------------------------------------


async def _ready(sock: socket.socket, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    fd = sock.fileno()
    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def send_frame_async(sock: socket.socket, frame: Frame) -> None:
    """Send a frame on a non-blocking socket without blocking the event loop."""
    loop = asyncio.get_running_loop()
    for data, fds in _chunks(frame):
        while True:
            try:
                sent = sock.sendmsg([data], _rights(fds))
                break
            except BlockingIOError:
                await _ready(sock, write=True)
        if sent < len(data):
            await loop.sock_sendall(sock, data[sent:])
    await loop.sock_sendall(sock, frame.payload)


async def _recv_exact_async(sock: socket.socket, size: int, fds: list[int]) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk, ancdata, flags, _ = sock.recvmsg(
                size - len(data), socket.CMSG_SPACE(MAX_FDS_PER_SEND * _FD_SIZE), _RECV_FLAGS
            )
        except BlockingIOError:
            await _ready(sock, write=False)
            continue
        fds.extend(_checked(_fds_of(ancdata), flags))
        if not chunk:
            raise EOFError("the peer closed the connection")
        data += chunk
    return data


async def recv_frame_async(sock: socket.socket) -> Frame:
    """Receive a frame on a non-blocking socket; ``EOFError`` when the peer has gone."""
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    try:
        size, count, rss = HEADER.unpack(await _recv_exact_async(sock, HEADER.size, fds))
        while len(fds) < count:
            await _recv_exact_async(sock, 1, fds)
        payload = bytearray(size)
        view = memoryview(payload)
        received = 0
        while received < size:
            got = await loop.sock_recv_into(sock, view[received:])
            if not got:
                raise EOFError("the peer closed the connection")
            received += got
    except BaseException:
        Frame(b"", fds).close()
        raise
    return Frame(payload, fds, rss)
