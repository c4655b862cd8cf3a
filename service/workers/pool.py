"""Worker processes for one device: hard deadlines, crash isolation and recycling.

A thread cannot be stopped inside a torch call, so compute that must be stoppable runs in a
worker process, one task at a time. At its deadline the caller gets its 504 and the worker
is killed (``SIGKILL``) and replaced by a spare started ahead, so that the next request
finds a worker at once; a client that goes away kills its worker the same way. A worker
that dies (the kernel's out-of-memory killer, a crash in native code) fails only the
request it was running (503 ``worker_lost``). After each task the worker reports its
resident set size; past ``max_rss_bytes`` it is retired between requests.

Workers are forked from multiprocessing's fork server (:mod:`service.workers.processes`);
the server process itself, which has threads, is never forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from service.errors import ComputeTimeout, WorkerLost
from service.limits import Deadline
from service.metrics import Metrics
from service.workers import child, transport
from service.workers.buffers import release_frame
from service.workers.outcomes import Failure, out_of_memory
from service.workers.processes import BASE_PRELOAD, WorkerProcess, launch, process_thread
from service.workers.transport import Frame

A = TypeVar("A")
T = TypeVar("T")

logger = logging.getLogger("torchlab.workers")

LOOP_COPY_BYTES = 1 << 20
"""Most tensor bytes a task's argument may copy into shared memory on the event loop;
more is pickled in a thread."""

LOOP_DECODE_BYTES = 1 << 20
"""Largest result payload unpickled on the event loop; larger ones are unpickled in a thread."""

# Kill reasons (the ``reason`` label of the kill counter).
TIMED_OUT = "timeout"
CANCELLED = "cancelled"
DIED = "died"
FAILED = "error"


def _lost(device: str, exitcode: int | None) -> WorkerLost:
    signal_name = None
    if exitcode is None:
        how = "stopped answering"
    elif exitcode < 0:
        try:
            signal_name = signal.Signals(-exitcode).name
        except ValueError:
            signal_name = f"signal {-exitcode}"
        how = f"was killed by {signal_name}"
        if exitcode == -signal.SIGKILL:
            how += " (the system does so when it runs out of memory)"
    else:
        how = f"exited with status {exitcode}"
    return WorkerLost(
        f"the worker process computing this request {how}; retry, with smaller inputs if "
        "it happens again",
        details={"device": device, "exitcode": exitcode, "signal": signal_name},
    )


def _no_worker(device: str) -> WorkerLost:
    return WorkerLost(
        f"no worker process could be started for {device}; retry later",
        details={"device": device, "exitcode": None, "signal": None},
    )


async def _off_loop(
    executor: ThreadPoolExecutor | None, fn: Callable[[], T], abandon: Callable[[T], None]
) -> T:
    """``fn()`` in ``executor``; should the caller be cancelled meanwhile, its result is
    handed to ``abandon`` (which frees what it holds) once ready.

    ``abandon`` runs in the executor's thread when ``fn`` finishes after the cancellation,
    not by way of the event loop: a loop that ends cancels its tasks and then runs nothing
    more (as each loop of a test client without its lifespan does), which would leave the
    result, a worker process and its socket, to the garbage collector.
    """
    lock = threading.Lock()
    ready: list[T] = []  # fn's result, once returned to the caller
    abandoned = False

    def call() -> T:
        result = fn()
        with lock:
            if not abandoned:
                ready.append(result)
                return result
        abandon(result)
        return result

    future = asyncio.get_running_loop().run_in_executor(executor, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with lock:
            abandoned = True
            finished = ready[:]
        for result in finished:  # returned, but nobody awaits it now
            abandon(result)
        raise


class WorkerPool:
    """Worker processes that run tasks for one device, one task per worker at a time.

    ``size`` workers serve at once and ``spares`` more wait ready, so that a killed or
    retired worker is replaced before the next request needs it. The pool does not queue
    beyond that: its caller bounds concurrency (the device's slots) to ``size``.
    Workers start on the first :meth:`run` (or :meth:`start`) and live on the event loop
    that made that call. ``threads`` > 0 sets torch's threads in each worker; ``preload``
    names modules each worker imports before it is ready. ``max_memory_bytes`` > 0 limits
    the private memory of each worker beyond what it holds once ready
    (:func:`service.memory.limit_private_memory`). ``flush_subnormals``: its workers compute
    with subnormal floats as zero (:func:`service.ops.threads.flush_subnormals`).
    """

    def __init__(
        self,
        device: str,
        *,
        size: int,
        spares: int = 1,
        max_rss_bytes: int = 4 << 30,
        max_memory_bytes: int = 0,
        preload: Sequence[str] = (),
        metrics: Metrics | None = None,
        threads: int = 0,
        start_timeout_s: float = 60.0,
        flush_subnormals: bool = False,
    ) -> None:
        self.device = device
        self.size = size
        self.spares = spares
        self.max_rss_bytes = max_rss_bytes
        self.max_memory_bytes = max_memory_bytes
        self.preload = tuple(dict.fromkeys([*BASE_PRELOAD, *preload]))
        self.metrics = metrics
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.flush_subnormals = flush_subnormals
        self._idle: deque[WorkerProcess] = deque()
        self._busy: set[WorkerProcess] = set()
        self._starting = 0
        self._waiters: deque[asyncio.Future[WorkerProcess]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers, idle ones first."""
        return [worker.pid for worker in (*self._idle, *self._busy)]

    @property
    def busy_pids(self) -> list[int]:
        """Process ids of the workers running a task now."""
        return [worker.pid for worker in self._busy]

    async def start(self) -> None:
        """Start the workers and wait until all ``size + spares`` of them are ready.

        Raises :class:`WorkerLost` when none could be started.
        """
        self._replenish()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self._idle and not self._busy:
            raise _no_worker(self.device)

    async def run(
        self,
        fn: Callable[[A, Deadline], T],
        arg: A,
        deadline: Deadline,
        *,
        autograd: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> T:
        """``fn(arg, deadline)`` in a worker, under ``torch.inference_mode()`` unless
        ``autograd``; ``fn`` must be picklable (a module-level function or a
        ``functools.partial`` of one), ``arg`` too (its tensors cross by shared memory).
        ``on_progress`` receives the events ``fn`` reports with ``deadline.progress``.

        Raises :class:`ComputeTimeout` at the deadline and :class:`WorkerLost` if the worker
        dies, killing or replacing the worker; re-raises what ``fn`` raised (a
        :class:`~service.errors.ServiceError` as it was, memory errors as
        :class:`~service.errors.DeviceOutOfMemory`).
        """
        if self._closed:
            raise RuntimeError(f"the worker pool of {self.device} is closed")
        deadline.streaming = on_progress is not None
        try:
            task = await self._encode((fn, arg, deadline, autograd))
        except MemoryError as exc:  # no room in shared memory for the task's tensors
            raise out_of_memory(exc) from exc
        worker: WorkerProcess | None = None
        try:
            async with asyncio.timeout(deadline.remaining()):
                worker = await self._checkout()
                released = worker.lent.released()
                if released:  # answers sent: the worker may write new ones there
                    await transport.send_frame_async(worker.sock, release_frame(released))
                await transport.send_frame_async(worker.sock, task)
                task.close()
                reply = await transport.recv_frame_async(worker.sock)
                while (event := transport.progress_event(reply)) is not None:
                    if on_progress is not None:
                        on_progress(event)
                    reply = await transport.recv_frame_async(worker.sock)
        except TimeoutError:
            deadline.cancelled = True
            if worker is not None:
                self._discard(worker, TIMED_OUT)
            raise ComputeTimeout(
                f"the request ran past its time limit of {deadline.seconds:g} s",
                details={"limit": "request_timeout_s", "allowed": deadline.seconds},
            ) from None
        except asyncio.CancelledError:
            if worker is not None:
                self._discard(worker, CANCELLED)
            raise
        except (EOFError, OSError):
            if worker is None:
                raise
            raise await self._lose(worker) from None
        except BaseException:
            if worker is not None:
                self._discard(worker, FAILED)
            raise
        finally:
            task.close()
        self._checkin(worker, reply.rss)
        kind, value = await self._decode(reply, worker)
        if kind == child.FAILED:
            assert isinstance(value, Failure)
            raise value.exception()
        result: T = value
        return result

    def close(self) -> None:
        """Kill every worker; a task running now fails with :class:`WorkerLost`."""
        self._closed = True
        for worker in list(self._idle):
            self._leave(worker)
            worker.end()
        for worker in list(self._busy):
            # Its caller sees the socket reach its end, fails with WorkerLost and reaps it.
            self._leave(worker)
            worker.kill()
        for waiter in self._waiters:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                waiter.cancel()
        self._waiters.clear()
        for task in self._tasks:
            with contextlib.suppress(RuntimeError):
                task.cancel()

    # -- the task's way -------------------------------------------------------------------

    async def _encode(self, task: child.Task) -> transport.Frame:
        try:
            return transport.dumps(task, copy_limit=LOOP_COPY_BYTES)
        except transport.CopyTooLarge:
            # Copying large tensors into shared memory would hold up the event loop.
            return await _off_loop(None, functools.partial(transport.dumps, task), Frame.close)

    async def _decode(self, reply: transport.Frame, worker: WorkerProcess) -> tuple[str, Any]:
        mapped: transport.Mapped = []
        fresh: set[int] = set()
        if len(reply.payload) <= LOOP_DECODE_BYTES:
            outcome = transport.loads(reply, mapped, fresh)
        else:
            loop = asyncio.get_running_loop()
            decoding = loop.run_in_executor(None, transport.loads, reply, mapped, fresh)
            try:
                outcome = await asyncio.shield(decoding)
            except asyncio.CancelledError:
                # The caller is gone, but what the answer maps is the worker's buffers: once
                # they die here, the worker must hear of it, or they stay lent for good.
                decoding.add_done_callback(lambda _: worker.lent.add(mapped, fresh))
                raise
        worker.lent.add(mapped, fresh)
        kind, value = outcome
        return kind, value

    async def _checkout(self) -> WorkerProcess:
        self._replenish()
        while self._idle:
            worker = self._idle.pop()  # the one that finished last: see _hand_over
            if worker.idle_and_alive():
                self._busy.add(worker)
                return worker
            self._discard(worker, DIED)  # died while idle: no request to fail
        waiter: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._checkin(waiter.result(), 0)  # handed over as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _checkin(self, worker: WorkerProcess, rss: int) -> None:
        self._busy.discard(worker)
        worker.rss = rss
        worker.tasks += 1
        if self._closed:
            self._leave(worker)
            worker.end()
        elif rss > self.max_rss_bytes:
            logger.info(
                "retiring worker %d of %s: %d MiB resident, over the limit of %d MiB",
                worker.pid,
                self.device,
                rss >> 20,
                self.max_rss_bytes >> 20,
            )
            self._retire(worker)
        else:
            self._hand_over(worker)

    def _hand_over(self, worker: WorkerProcess, *, fresh: bool = False) -> None:
        """To the first waiter, else to the idle workers: a worker back from a task at the
        end that :meth:`_checkout` takes from, a fresh one at the other. The next task
        goes to the worker that finished last: its caches and torch's threads are warm, it
        still maps the shared buffers the server reuses, and on a VM its CPU is not asleep
        (a worker idle for a few requests took 0.5 to 1 ms longer to unpickle a task and
        about 15% longer to compute). The others stay idle and give their memory back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(worker)
                waiter.set_result(worker)
                return
        if fresh:
            self._idle.appendleft(worker)
        else:
            self._idle.append(worker)

    # -- workers leaving ------------------------------------------------------------------

    def _leave(self, worker: WorkerProcess) -> bool:
        """Take a worker out of the pool; false if it had left already."""
        if worker.gone:
            return False
        worker.gone = True
        self._busy.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if self.metrics is not None:
            self.metrics.workers.labels(self.device).dec()
        return True

    def _retire(self, worker: WorkerProcess) -> None:
        if self._leave(worker):
            if self.metrics is not None:
                self.metrics.worker_recycles.labels(self.device).inc()
            self._replenish()
        worker.end()  # idle: nothing to lose

    def _discard(self, worker: WorkerProcess, reason: str) -> None:
        if self._leave(worker):
            logger.info("worker %d of %s ends (%s)", worker.pid, self.device, reason)
            if self.metrics is not None:
                self.metrics.worker_kills.labels(self.device, reason).inc()
            self._replenish()
        worker.end()

    async def _lose(self, worker: WorkerProcess) -> WorkerLost:
        if self._leave(worker):
            if self.metrics is not None:
                self.metrics.worker_kills.labels(self.device, DIED).inc()
            self._replenish()
        worker.end()
        if self._closed:
            return WorkerLost(
                "the service stopped while computing this request; retry",
                details={"device": self.device, "exitcode": None, "signal": None},
            )
        exitcode = await asyncio.wrap_future(worker.reaped())
        error = _lost(self.device, exitcode)
        logger.warning("worker %d of %s: %s", worker.pid, self.device, error.message)
        return error

    # -- workers arriving -----------------------------------------------------------------

    def _replenish(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        missing = self.size + self.spares - len(self._idle) - len(self._busy) - self._starting
        for _ in range(missing):
            self._starting += 1
            task = loop.create_task(self._spawn())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _launch(self) -> WorkerProcess:
        return launch(
            self.device,
            self.preload,
            self.threads,
            self.max_memory_bytes,
            flush_subnormals=self.flush_subnormals,
        )

    async def _spawn(self) -> None:
        try:
            worker = await _off_loop(process_thread, self._launch, WorkerProcess.end)
        except Exception as exc:
            self._starting -= 1
            self._start_failed(exc)
            return
        try:
            worker.sock.setblocking(False)
            async with asyncio.timeout(self.start_timeout_s):
                hello = await transport.recv_frame_async(worker.sock)
            kind, _pid = transport.loads(hello)
            if kind != child.READY:
                raise RuntimeError(f"unexpected first message {kind!r}")
        except BaseException as exc:
            self._starting -= 1
            worker.end()
            if isinstance(exc, Exception):
                self._start_failed(exc)
                return
            raise
        self._starting -= 1
        if self._closed:
            worker.end()
            return
        worker.rss = hello.rss
        if self.metrics is not None:
            self.metrics.worker_starts.labels(self.device).inc()
            self.metrics.workers.labels(self.device).inc()
        self._hand_over(worker, fresh=True)

    def _start_failed(self, exc: Exception) -> None:
        logger.error("could not start a worker for %s: %s", self.device, exc)
        error = _no_worker(self.device)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
