"""A worker process's side: receive a task, run it, send its outcome, trim the heap.

The server starts a worker with :func:`serve` as the target of a ``forkserver`` process. The
worker imports what the pool asks for, says it is ready and then answers tasks one at a
time until the server closes its end of the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import logging
import os
import select
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch

from service import memory
from service.limits import Deadline
from service.ops.threads import flush_subnormals
from service.workers import buffers, transport
from service.workers.outcomes import Failure, picklable

logger = logging.getLogger("torchlab.workers")

READY = "ready"
OK = "ok"
FAILED = "failed"

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

Task = tuple[Callable[[Any, Deadline], Any], Any, Deadline, bool]
"""What the server sends: ``(fn, arg, deadline, autograd)``."""


def resident_bytes() -> int:
    """This process's resident set size, from ``/proc`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _malloc_trim() -> Callable[[], None]:
    # glibc keeps freed memory in its arenas; after a large task that is RSS nobody uses.
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release_free_memory() -> None:
        trim(0)

    return release_free_memory


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_KEEP_BYTES = 256 << 20
"""Freed memory a worker's heap keeps between tasks that follow one another (glibc's
``M_TRIM_THRESHOLD``); all of it goes back once the worker is idle (:data:`TRIM_WHEN_IDLE_S`)."""
HEAP_BLOCK_BYTES = 32 << 20
"""Blocks up to this size come from the heap, reused from one task to the next (glibc's
``M_MMAP_THRESHOLD``, at its largest); larger ones are mapped and unmapped each time."""


def _keep_freed_memory() -> None:
    """Make glibc keep the memory a task frees for the next task, until :func:`serve`
    trims it when idle.

    By default glibc maps each block over 128 KiB (more once it has seen larger blocks
    freed) on its own and unmaps it when freed, and gives the top of the heap back past
    twice that: a task's large buffers (a decoded tensor, a JSON text, a result) are then
    fresh pages every time, and the kernel zero-fills and maps each 4 KiB page at first
    touch. On a small VM that cost 3 ms for every 4 MB, more than the work on them: the
    8.75 MB base64 body of a 20000 × 40 float64 table took its body worker 32 ms to read,
    19 ms with its blocks reused.
    A worker's memory is bounded as before (``worker_max_rss_bytes``): it keeps at most
    what its tasks used, for as long as tasks keep coming."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)


def _batch_priority() -> None:
    """Schedule this process as batch work (``SCHED_BATCH``) at the server's niceness.

    Batch threads never preempt others when they wake, and a thread of the server that
    wakes (the event loop answering /health) preempts them: when compute takes every core,
    the loop still gets its turn at once. A lower priority (``nice``) would do that too, but
    it stalls torch's parallel work whenever another process keeps a core busy: the
    OpenMP threads that have finished their share spin at the barrier while the one left
    waits behind that process, for milliseconds per parallel region. Measured on 2 cores
    with one busy process: an LSTM over 300 steps took 3.6 s at ``nice 5`` against 7 ms as
    batch work (3.4 ms with nothing else running), a 20000x40 least squares 139 ms against
    7.6 ms.
    """
    with contextlib.suppress(OSError, AttributeError):  # not on every platform
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def release_device_memory() -> None:
    """The CUDA memory this process's caching allocator keeps (the blocks of tensors freed)
    goes back to the driver: another worker of the same GPU may need it, and an idle worker
    holding the peak of its last task would make that worker's allocation fail."""
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()


TRIM_WHEN_IDLE_S = buffers.IDLE_S
"""A worker idle this long after a task gives its freed memory back (``malloc_trim``, and
:func:`release_device_memory`) and lets go of its answer buffers and of the inputs it kept
mapped; the server lets go of its mappings of the worker's last answer after as long."""


def serve(
    sock: socket.socket,
    preload: Sequence[str],
    threads: int = 0,
    max_memory_bytes: int = 0,
    subnormals_as_zero: bool = False,
) -> None:
    """The worker's main loop (the target of its process); ``threads`` > 0 sets torch's;
    ``max_memory_bytes`` > 0 limits the private memory it takes beyond what it holds once
    its modules are imported (:func:`service.memory.limit_private_memory`);
    ``subnormals_as_zero``: :func:`~service.ops.threads.flush_subnormals`."""
    # ^C in a terminal reaches the whole process group; the server decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _batch_priority()
    _keep_freed_memory()
    if subnormals_as_zero:
        flush_subnormals()
    if threads > 0:
        torch.set_num_threads(threads)
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:
            logger.exception("worker %d could not import %s", os.getpid(), name)
    gc.freeze()  # torch and the ops live as long as we do: full collections skip them
    memory.limit_private_memory(max_memory_bytes)
    trim = _malloc_trim()
    answers = buffers.lender = buffers.AnswerBuffers()
    transport.send_frame(sock, transport.Frame(_pickle((READY, os.getpid())), [], resident_bytes()))
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    trimmed = True
    # The shared memory the last task's inputs were on, kept mapped: the server reuses its
    # buffers for binary bodies, and a task on the same buffer then maps nothing (mapping
    # and unmapping 6 MB cost about 1 ms a task).
    kept: transport.Mapped = []
    while True:
        # Freed memory goes back to the system once no task has come for a moment: a task
        # that follows at once reuses it instead of faulting fresh pages in (a 10 MB JSON
        # body is about a million objects to allocate again).
        if not trimmed and not poller.poll(TRIM_WHEN_IDLE_S * 1000):
            kept.clear()
            answers.clear()
            trim()
            release_device_memory()
            trimmed = True
        try:
            frame = transport.recv_frame(sock)
        except (EOFError, ConnectionError):
            return  # the server closed our socket: retire quietly
        released = buffers.released_files(frame)
        if released is not None:  # ahead of a task: answers the server is done with
            answers.release(released)
            continue
        mapped: transport.Mapped = []
        reply = _answer(frame, sock, mapped)
        kept[:] = mapped  # the last task's go now, once this one's are mapped
        del mapped  # `kept` alone holds them, so that an idle worker lets them go
        trimmed = False
        reply.rss = resident_bytes()
        try:
            transport.send_frame(sock, reply)
        except (BrokenPipeError, ConnectionError):
            return
        finally:
            reply.close()
        # Nothing of this task outlives it: an answer that went by value (a pickle of up
        # to the largest response) would stay in memory until the next task.
        del frame, reply


def _report(sock: socket.socket, event: dict[str, Any]) -> None:
    transport.send_frame(sock, transport.progress_frame(event))


def _pickle(obj: object) -> bytes:
    frame = transport.dumps(obj)
    frame.close()
    return bytes(frame.payload)


def _answer(
    frame: transport.Frame, sock: socket.socket, mapped: transport.Mapped
) -> transport.Frame:
    """Run one task; its result or failure, pickled. A streaming task's progress events go
    to the server as they come, ahead of the result. ``mapped`` receives the shared-memory
    storages of the task's inputs."""
    try:
        fn, arg, deadline, autograd = transport.loads(frame, mapped)
        if deadline.streaming:
            deadline.reporter = functools.partial(_report, sock)
        mode = contextlib.nullcontext() if autograd else torch.inference_mode()
        with mode:
            result = fn(arg, deadline)
        del arg
        try:
            return transport.dumps((OK, result), to_cpu=True)
        except MemoryError:
            raise  # no room in shared memory for the result: a 503, as any memory error
        except Exception as exc:
            raise TypeError(f"the task's result cannot be sent back: {exc}") from exc
    except Exception as exc:
        failure = Failure.capture(exc)
    if not picklable(failure):
        failure = failure.stand_in()
    try:
        return transport.dumps((FAILED, failure), to_cpu=True)
    except Exception:
        return transport.dumps((FAILED, failure.stand_in()))
