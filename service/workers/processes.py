"""Worker processes themselves: the fork server they come from, starting, killing, reaping.

Workers are forked from multiprocessing's fork server, which imports torch (and the
``preload`` modules) once, so that a worker starts in milliseconds; the server process
itself, which has threads, is never forked. The fork server and the thread that starts and
reaps processes are shared by every pool of the process, as multiprocessing's own
bookkeeping of child processes is.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.process import BaseProcess

from service.workers import child
from service.workers.buffers import LentFiles

BASE_PRELOAD = ("torch", "service.workers.child")
"""Imported by the fork server whatever the pools ask for."""

EXIT_STATUS_WAIT_S = 1.0
"""How long a lost worker's exit status is awaited (it is only used in the error's details)."""

_CONTEXT = multiprocessing.get_context("forkserver")
process_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchlab-workers")
"""Starts and reaps every worker of the process, one at a time: multiprocessing polls all
its children when it starts one, and two threads reading one exit status would race."""


def start_forkserver(preload: Iterable[str] = ()) -> None:
    """Start the process-wide fork server, importing ``preload`` in it once so that each
    worker forked from it starts with those modules loaded.

    The fork server is shared by every pool of the process: the list in force when it
    starts wins (each worker still imports its pool's ``preload``, a no-op when the fork
    server had). Cheap when it already runs. The imports happen in the fork server's
    process, so this returns at once; the first worker start waits for them.
    """
    _CONTEXT.set_forkserver_preload(list(dict.fromkeys([*BASE_PRELOAD, *preload])))
    forkserver.ensure_running()


@dataclass(eq=False)
class WorkerProcess:
    """One worker: its process, our end of its socket, and what the pool knows of it."""

    process: BaseProcess
    sock: socket.socket
    pid: int
    pidfd: int | None
    rss: int = 0
    tasks: int = 0
    gone: bool = False
    """Out of the pool's count (killed, retired, lost, or the pool closed)."""
    exit: Future[int | None] | None = None
    """Its reaping in the process thread, once asked for: the exit status."""
    lent: LentFiles = field(default_factory=LentFiles)
    """The shared memory its answers brought, until it is released back to it."""

    def kill(self) -> None:
        # By pidfd where the system has them: a pid may be reused once the fork server has
        # reaped the process, a pidfd always names this one.
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def idle_and_alive(self) -> bool:
        # An idle worker never writes: a readable socket means it is gone (end of file).
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def reaped(self) -> Future[int | None]:
        """Its exit status, once the process thread has waited for it (and freed it)."""
        if self.exit is None:
            try:
                self.exit = process_thread.submit(_reap, self, EXIT_STATUS_WAIT_S)
            except RuntimeError:  # the interpreter is shutting down
                self.exit = Future()
                self.exit.set_result(None)
        return self.exit

    def end(self) -> None:
        """Kill it, close our end of its socket and have it reaped."""
        self.kill()
        self.sock.close()
        self.reaped()


def _reap(worker: WorkerProcess, timeout: float) -> int | None:
    """Wait for the worker's exit status and free its process object (process thread)."""
    worker.process.join(timeout)
    if worker.process.exitcode is None:
        worker.kill()
        worker.process.join(timeout)
    code = worker.process.exitcode
    if code is not None:
        worker.process.close()
    if worker.pidfd is not None:
        with contextlib.suppress(OSError):
            os.close(worker.pidfd)
        worker.pidfd = None
    return code


def launch(
    device: str,
    preload: Sequence[str],
    threads: int,
    max_memory_bytes: int = 0,
    *,
    flush_subnormals: bool = False,
) -> WorkerProcess:
    """Start one worker process (in the process thread); it says when it is ready.
    ``max_memory_bytes`` > 0 limits its private memory beyond what it holds then;
    ``flush_subnormals``: it computes with subnormal floats as zero."""
    start_forkserver(preload)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = _CONTEXT.Process(
            target=child.serve,
            args=(theirs, tuple(preload), threads, max_memory_bytes, flush_subnormals),
            name=f"torchlab-worker-{device}",
            daemon=True,
        )
        process.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    assert process.pid is not None
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(process.pid)
    return WorkerProcess(process, ours, process.pid, pidfd)
