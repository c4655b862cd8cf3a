"""Shared memory for large bodies: fresh storages, and a worker's answers written into buffers
it reuses once the server has released them.

A fresh shared-memory file costs the kernel a page to zero and map for every 4 KiB (about
1 ms for 4 MB on a small VM, several on a busy one); a buffer written before costs nothing.
A worker's answer travels to the server by its file (:mod:`service.workers.transport`), and
the server sends it from those pages while the worker may already compute the next task.
So a worker reuses an answer's buffer only once the server says it is done with it: the
server keeps a weak reference to every storage a worker's answer brought, and before it
sends that worker a task it sends a release frame naming the files (by inode) of those
that have died on its side (:func:`release_frame`).

The server keeps the files of each worker's last answer mapped, as the worker keeps them,
until that worker has been idle for :data:`IDLE_S`: the next answer in the same buffer then
maps nothing. Mapping a 4 MB answer, its pages at once, and unmapping it once sent took
0.66 ms more than reading it from a mapping kept, on a small VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import torch

from service.workers.transport import MADV_POPULATE_WRITE, Frame, page_populator, weak_storage

KEEP_ANSWER_BYTES = 128 << 20
"""Most bytes of answer buffers (lent or free) a worker keeps for reuse; past them, an
answer goes in fresh shared memory that is not kept."""

IDLE_S = 1.0
"""A worker idle this long lets go of its answer buffers (and of the rest of the memory it
kept for the next task); the server lets go of its mappings of that worker's last answer
once no answer has come from the worker for as long."""

RELEASE_MARK = b"R"
"""The first byte of a release frame's payload (a pickle's is its protocol opcode, 0x80)."""


_populate = page_populator(MADV_POPULATE_WRITE)


def new_shared(nbytes: int) -> torch.UntypedStorage | None:
    """A fresh shared-memory storage, its pages mapped at once (one ``madvise`` costs far
    less than a page fault on each page at first touch); ``None`` where there is none."""
    try:
        storage: torch.UntypedStorage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    except (RuntimeError, OSError):
        return None
    if nbytes and _populate is not None:
        _populate(storage.data_ptr(), nbytes)  # a refusal is harmless: pages fault in
    return storage


def file_of(storage: torch.UntypedStorage) -> int | None:
    """The inode of a shared-memory storage's file (``None`` if it has none)."""
    try:
        fd = storage._share_fd_cpu_()[0]  # its own descriptor: a storage already shared
        return os.fstat(fd).st_ino
    except (RuntimeError, OSError, TypeError):
        return None


@dataclass
class _Buffer:
    storage: torch.UntypedStorage
    free: bool = False


class AnswerBuffers:
    """A worker's answer buffers, by inode: lent to the server with an answer, free again
    once released. Sizes are powers of two, and an answer reuses a buffer of its own size
    only: the server maps a whole buffer to read an answer, and a small answer in a large
    buffer would cost it more than a fresh one. At most ``keep_bytes`` are kept."""

    def __init__(self, keep_bytes: int = KEEP_ANSWER_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self.kept_bytes = 0
        self._buffers: dict[int, _Buffer] = {}

    def take(self, nbytes: int) -> torch.UntypedStorage | None:
        """A storage of at least ``nbytes`` in shared memory, lent from now on: a free
        buffer of its size, else a fresh one (kept when it fits); ``None`` where there is
        no shared memory."""
        size = 1 << max(nbytes - 1, 0).bit_length()
        for buffer in self._buffers.values():
            if buffer.free and buffer.storage.nbytes() == size:
                buffer.free = False
                return buffer.storage
        self._make_room(size)
        storage = new_shared(size)
        if storage is None:
            return None
        inode = file_of(storage)
        if inode is not None and self.kept_bytes + size <= self.keep_bytes:
            self._buffers[inode] = _Buffer(storage)
            self.kept_bytes += size
        return storage

    def _make_room(self, size: int) -> None:
        for inode, buffer in sorted(self._buffers.items(), key=lambda i: -i[1].storage.nbytes()):
            if self.kept_bytes + size <= self.keep_bytes:
                return
            if buffer.free:
                del self._buffers[inode]
                self.kept_bytes -= buffer.storage.nbytes()

    def release(self, inodes: list[int]) -> None:
        """The server is done with these files (those not ours are ignored)."""
        for inode in inodes:
            buffer = self._buffers.get(inode)
            if buffer is not None:
                buffer.free = True

    def clear(self) -> None:
        """Forget every buffer (a worker left idle): the free ones go back to the system, a
        lent one once the server has sent it (its mapping keeps it until then)."""
        self._buffers.clear()
        self.kept_bytes = 0


lender: AnswerBuffers | None = None
"""The answer buffers of this process when it is a worker (set by its main loop)."""


def shared_storage(nbytes: int) -> torch.UntypedStorage | None:
    """Shared memory for ``nbytes`` of a body: lent by this worker's answer buffers, or
    fresh in any other process."""
    if lender is not None:
        return lender.take(nbytes)
    return new_shared(nbytes)


# -- the server's side ----------------------------------------------------------------------


def unused(storage: torch.UntypedStorage) -> bool:
    """Whether nothing but the one reference its keeper holds uses ``storage`` (no tensor,
    no other storage object)."""
    use_count: int = torch._C._storage_Use_Count(storage._cdata)
    return use_count == 1


class LentFiles:
    """What the server knows of one worker's answers: a weak reference to each storage
    they brought, by its file's inode, until that storage has died here (its response sent
    and dropped), or, for one kept mapped, until nothing else uses it. One entry a file: a
    storage that stays alive here (a view of one of the server's own buffers, handed back)
    is tracked once, however often it comes back.

    The storages of the last answer that brought files of the worker's (mapped by that
    answer, or kept from an answer before) are kept, and so stay mapped, until ``idle_s``
    has passed without an answer (a timer of the event loop they were added on; without
    one, until the next answer). The server's own buffers handed back are never kept here:
    their pool tells a free one by nothing else holding it."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._refs: dict[int, Any] = {}
        self._kept: dict[int, torch.UntypedStorage] = {}
        self._last_kept = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def kept(self) -> list[int]:
        """The inodes of the files kept mapped."""
        return list(self._kept)

    def add(
        self, mapped: list[tuple[int, torch.UntypedStorage]], fresh: set[int] | None = None
    ) -> None:
        """Track the storages an answer brought; ``fresh``: the inodes of those that the
        answer mapped (the worker's, as the server's own buffers are mapped here already)."""
        fresh = fresh or set()
        kept = {}
        for inode, storage in mapped:
            if inode not in self._refs:
                self._refs[inode] = weak_storage(storage)
            if inode in fresh or inode in self._kept:
                kept[inode] = storage
        if kept:
            self._kept = kept  # the previous answer's files go once their responses have
            self._last_kept = time.monotonic()
            self._forget_later(self.idle_s)

    def released(self) -> list[int]:
        """The inodes of the storages that have died, or that are kept and unused, since
        the last call."""
        kept = self._kept
        dead = [
            inode
            for inode, ref in self._refs.items()
            if (unused(kept[inode]) if inode in kept else ref.expired())
        ]
        for inode in dead:
            del self._refs[inode]
        return dead

    def forget(self) -> None:
        """Keep nothing mapped: each file goes once its responses have been sent."""
        self._kept = {}

    def _forget_later(self, delay: float) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # added off any event loop: kept until the next answer
            return
        self._timer = loop.call_later(delay, self._forget_if_idle)

    def _forget_if_idle(self) -> None:
        self._timer = None
        idle = time.monotonic() - self._last_kept
        if idle >= self.idle_s:
            self.forget()
        elif self._kept:
            self._forget_later(self.idle_s - idle)


def release_frame(inodes: list[int]) -> Frame:
    """The frame telling a worker that the server is done with these files."""
    return Frame(RELEASE_MARK + orjson.dumps(inodes), [])


def released_files(frame: Frame) -> list[int] | None:
    """The inodes of a release frame; ``None`` for any other frame."""
    if frame.fds or not frame.payload or frame.payload[:1] != RELEASE_MARK:
        return None
    with contextlib.suppress(orjson.JSONDecodeError):
        inodes = orjson.loads(bytes(frame.payload[1:]))
        if isinstance(inodes, list) and all(isinstance(i, int) for i in inodes):
            return inodes
    return []
