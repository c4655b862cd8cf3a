"""The device manager: which devices exist, which one a request gets, and how many run at once.

CUDA is probed on first use (the app's lifespan), never when the manager is built or the
app imported. Compute
runs in a thread of the server (:meth:`DeviceManager.run`) or, stoppable at its deadline,
in a worker process of the device's :class:`~service.workers.WorkerPool`
(:meth:`DeviceManager.run_isolated`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from prometheus_client import Gauge

from service.config import Settings
from service.errors import ComputeTimeout, DeviceUnavailable, TooManyRequests
from service.limits import Deadline
from service.memory import allocation_failed, worker_memory_limit
from service.metrics import Metrics
from service.ops.threads import SubnormalsFlushed
from service.workers import WorkerPool, start_forkserver
from service.workers.outcomes import out_of_memory

BODY_POOL = "body"
"""The worker processes that read large request bodies (``service.api.bodies``)."""
BODY_WORKERS = 2

A = TypeVar("A")
T = TypeVar("T")

HEAVY_IMPORTS = (
    "numpy",
    "sklearn.datasets",
    "torchvision.transforms.v2",
    "torchvision.utils",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)
"""Libraries the ops import on first use, each in a second or more: the worker processes'
fork server imports them once, so that no worker pays for them on a request."""


def worker_preload() -> list[str]:
    """The modules the fork server imports once for every worker: :data:`HEAVY_IMPORTS`
    and the modules of ``service.ops`` that the server has imported (where the functions
    that workers run live). Only modules the server imported without error are listed: the
    fork server survives an ``ImportError`` only."""
    ops = sorted(name for name in sys.modules if name.startswith("service.ops."))
    return [*HEAVY_IMPORTS, *ops]


class DeviceManager:
    """Chooses devices, bounds concurrent compute per device and runs compute off the event loop."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._slots: dict[str, _Slot] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pools: dict[str, WorkerPool] = {}
        self._body_slots: _Slot | None = None

    @functools.cached_property
    def cuda_count(self) -> int:
        """CUDA devices, probed on first use (in the lifespan), never at import."""
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    @functools.cached_property
    def default(self) -> torch.device:
        """The device of requests that name none (``TORCHLAB_DEVICE``)."""
        return self._resolve(self.settings.device, "TORCHLAB_DEVICE")

    def start(self) -> None:
        """Fresh compute threads and slots, bound to the event loop that serves from now on.

        With ``isolate``, also starts the fork server of the worker processes, which imports
        torch and the ops in the background; each device's workers start on its first
        isolated request (an app that computes nothing starts none).
        """
        _ = self.default  # an absent TORCHLAB_DEVICE fails the start (422 DeviceUnavailable)
        self._start_threads()
        if self.settings.isolate:
            start_forkserver(worker_preload())

    def _start_threads(self) -> None:
        self.close()
        self._slots = {}
        workers = self.settings.limits.max_inflight_per_device * (1 + self.cuda_count) + 2
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compute")

    def close(self) -> None:
        """Stop taking compute work: running threads finish in the background, worker
        processes are killed (a request they were running fails with 503)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for pool in self._pools.values():
            pool.close()
        self._pools = {}

    @property
    def available(self) -> list[str]:
        """Every device name a request may ask for, CPU first."""
        return ["cpu", *(f"cuda:{i}" for i in range(self.cuda_count))]

    def resolve(self, requested: str | None) -> torch.device:
        """The device for a request: its ``device`` field, or the default for ``None``/``auto``.

        Raises :class:`DeviceUnavailable` (422) for a device this machine does not have.
        """
        if requested is None:
            return self.default
        return self._resolve(requested, "device")

    def _resolve(self, requested: str, field: str) -> torch.device:
        if requested == "auto":
            return torch.device("cuda:0" if self.cuda_count else "cpu")
        if requested == "cpu":
            return torch.device("cpu")
        if requested.startswith("cuda"):
            index = int(requested.partition(":")[2] or 0)
            if index < self.cuda_count:
                return torch.device(f"cuda:{index}")
        raise DeviceUnavailable(
            f"{field}: device {requested!r} is not available here; available: "
            f"{', '.join(self.available)}",
            details={"requested": requested, "available": self.available},
        )

    @staticmethod
    def synchronize(device: torch.device) -> None:
        """Wait for the device's queued work (a no-op on the CPU)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def info(self) -> list[dict[str, Any]]:
        """Each device with its name and, for CUDA, total and free memory in bytes."""
        devices: list[dict[str, Any]] = [
            {
                "name": "cpu",
                "type": "cpu",
                "device_name": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            }
        ]
        for index in range(self.cuda_count):
            free, total = torch.cuda.mem_get_info(index)
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "name": f"cuda:{index}",
                    "type": "cuda",
                    "device_name": props.name,
                    "total_memory_bytes": total,
                    "free_memory_bytes": free,
                    "capability": f"{props.major}.{props.minor}",
                }
            )
        return devices

    def _slot(self, device: str) -> _Slot:
        if device not in self._slots:
            self._slots[device] = _Slot(
                asyncio.Semaphore(self.settings.limits.max_inflight_per_device),
                self.metrics.inflight.labels(device),
                self.metrics.queued.labels(device),
            )
        return self._slots[device]

    async def run(
        self,
        fn: Callable[[Deadline], T],
        devices: Iterable[torch.device],
        *,
        autograd: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> T:
        """Run ``fn(deadline)`` in a compute thread once every device has a free slot.

        Waits at most ``queue_timeout_s`` for the slots (then 429 with ``Retry-After``) and
        ``request_timeout_s`` for the result (then 504; the work stops at its next
        ``deadline.check()`` and keeps its slots until it has). A caller cancelled (its
        client gone) stops the work the same way. Runs under
        ``torch.inference_mode()`` unless ``autograd``.

        Work the caller has measured as tiny (microseconds), where a thread hop would cost
        more than the work, runs on the event loop instead: :meth:`run_inline`.
        ``on_progress`` receives, on the event loop, the events ``fn`` reports with
        ``deadline.progress``.
        """
        if self._executor is None:
            self._start_threads()
        slots = [self._slot(name) for name in sorted({str(device) for device in devices})]
        await self._acquire(slots)
        loop = asyncio.get_running_loop()
        deadline = Deadline(self.settings.limits.request_timeout_s)
        if on_progress is not None:
            report = on_progress

            def reporter(event: dict[str, Any]) -> None:
                loop.call_soon_threadsafe(report, event)

            deadline.reporter = reporter

        def release() -> None:
            for slot in slots:
                slot.release()

        def work() -> T:
            try:
                mode = contextlib.nullcontext() if autograd else torch.inference_mode()
                with mode:
                    return fn(deadline)
            except Exception as exc:
                if allocation_failed(exc):
                    raise out_of_memory(exc) from exc
                raise
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                    loop.call_soon_threadsafe(release)

        # Shielded: a timed-out request must not cancel work that holds its slots.
        future = asyncio.shield(loop.run_in_executor(self._executor, work))
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await future
        except TimeoutError:
            deadline.cancelled = True
            raise ComputeTimeout(
                f"the request ran past its time limit of {deadline.seconds:g} s",
                details={"limit": "request_timeout_s", "allowed": deadline.seconds},
            ) from None
        except asyncio.CancelledError:  # its caller gone (a client that left)
            deadline.cancelled = True  # the work stops at its next check, freeing its slots
            raise

    def run_inline(self, fn: Callable[[A, Deadline], T], arg: A, *, autograd: bool = False) -> T:
        """``fn(arg, deadline)`` at once, on the event loop, for work measured as tiny: no
        slot, no thread, not even a coroutine (on a tiny request, each layer costs more than
        the work). Under ``torch.inference_mode()`` unless ``autograd``."""
        deadline = Deadline(self.settings.limits.request_timeout_s)
        with SubnormalsFlushed():  # as in a worker
            if autograd:
                return fn(arg, deadline)
            # torch.inference_mode()'s own guard, without the three Python calls around it
            with torch._C._InferenceMode(True):
                return fn(arg, deadline)

    async def run_isolated(
        self,
        fn: Callable[[A, Deadline], T],
        arg: A,
        devices: Iterable[torch.device],
        *,
        autograd: bool = False,
        lease: SlotLease | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> T:
        """Run ``fn(arg, deadline)`` in a worker process once every device has a free slot
        (or in the slots of ``lease``, which the caller then releases).

        The slots and their queue are :meth:`run`'s (429 after ``queue_timeout_s``). At
        ``request_timeout_s`` the answer is 504 and the worker is killed, which frees the
        slots at once; a worker that dies fails the request with 503 ``worker_lost``.
        ``fn`` must be a module-level function (or a ``functools.partial`` of one) and
        ``arg`` picklable: its tensors cross by shared memory, as do the result's (CUDA
        tensors of the result come back on the CPU). Work on several devices runs in the
        first device's pool while holding every device's slot. Runs under
        ``torch.inference_mode()`` unless ``autograd``. ``on_progress`` receives, on the event
        loop, the events ``fn`` reports with ``deadline.progress``.

        With ``isolate`` off, runs ``fn`` in a thread as :meth:`run` does.
        """
        used = list(devices)
        if not used:
            raise ValueError("run_isolated needs at least one device")
        if not self.settings.isolate:
            if lease is not None:
                lease.release()  # threads hold their own slots until their work ends
            work = functools.partial(fn, arg)
            return await self.run(work, used, autograd=autograd, on_progress=on_progress)
        held = lease if lease is not None else await self.lease(used)
        try:
            deadline = Deadline(self.settings.limits.request_timeout_s)
            pool = self._pool(str(used[0]))
            return await pool.run(fn, arg, deadline, autograd=autograd, on_progress=on_progress)
        finally:
            if lease is None:
                held.release()

    async def lease(self, devices: Iterable[torch.device]) -> SlotLease:
        """Take a slot of every device (429 after ``queue_timeout_s``), to hold past the
        compute, e.g. until its response is sent. The lease frees itself after
        ``request_timeout_s + send_timeout_s + queue_timeout_s`` at the latest."""
        slots = [self._slot(name) for name in sorted({str(device) for device in devices})]
        await self._acquire(slots)
        limits = self.settings.limits
        longest = limits.request_timeout_s + limits.send_timeout_s + limits.queue_timeout_s
        return SlotLease(slots, asyncio.get_running_loop(), longest)

    async def run_body(self, fn: Callable[[A, Deadline], T], arg: A) -> T:
        """Run ``fn(arg, deadline)`` in one of the worker processes that read large request
        bodies (two, whatever the devices; no compute slot is taken). More wait up to
        ``queue_timeout_s``, then 429."""
        if self._body_slots is None:
            self._body_slots = _Slot(
                asyncio.Semaphore(BODY_WORKERS),
                self.metrics.inflight.labels("body"),
                self.metrics.queued.labels("body"),
            )
        slot = self._body_slots
        await self._acquire([slot])
        try:
            deadline = Deadline(self.settings.limits.request_timeout_s)
            return await self._pool(BODY_POOL, size=BODY_WORKERS).run(fn, arg, deadline)
        finally:
            slot.release()

    async def start_workers(self, devices: Iterable[torch.device] | None = None) -> None:
        """Start the worker processes of ``devices`` (the default device when ``None``) now
        and wait until they are ready, instead of on each device's first isolated request."""
        for device in devices or [self.default]:
            await self._pool(str(device)).start()

    def _memory_limit(self, device: str) -> int:
        """The private memory a worker of ``device`` may take (:mod:`service.memory`): none
        for a GPU's, whose CUDA driver maps host memory of its own, nor for the body workers,
        bounded by the body limits, which parse with orjson and decode pictures: orjson
        crashes (SIGSEGV) when an allocation fails, and libjpeg's refusal reads as corrupt
        data. The automatic limit leaves room to encode the largest answer as JSON (orjson
        again), four times ``max_response_bytes``."""
        if device.startswith("cuda") or device == BODY_POOL:
            return 0
        limits = self.settings.limits
        processes = limits.max_inflight_per_device + BODY_WORKERS
        floor = 4 * limits.max_response_bytes
        return worker_memory_limit(self.settings.worker_max_memory_bytes, processes, floor)

    def _pool(self, device: str, size: int | None = None) -> WorkerPool:
        if device not in self._pools:
            self._pools[device] = WorkerPool(
                device,
                size=size or self.settings.limits.max_inflight_per_device,
                spares=self.settings.worker_spares,
                max_rss_bytes=self.settings.worker_max_rss_bytes,
                max_memory_bytes=self._memory_limit(device),
                metrics=self.metrics,
                threads=self.settings.worker_threads,
                # Compute only: a body worker parses numbers, and keeps subnormal ones.
                flush_subnormals=device != BODY_POOL,
            )
        return self._pools[device]

    async def _acquire(self, slots: list[_Slot]) -> None:
        acquired: list[_Slot] = []
        try:
            for slot in slots:
                await self._wait_for(slot)
                acquired.append(slot)
        except BaseException:
            for slot in acquired:
                slot.release()
            raise

    async def _wait_for(self, slot: _Slot) -> None:
        if not slot.semaphore.locked():  # the common case: no queue, no timer
            await slot.semaphore.acquire()
            slot.inflight.inc()
            return
        timeout = self.settings.limits.queue_timeout_s
        slot.queued.inc()
        try:
            async with asyncio.timeout(timeout):
                await slot.semaphore.acquire()
        except TimeoutError:
            retry = max(1, math.ceil(timeout))
            limit = self.settings.limits.max_inflight_per_device
            raise TooManyRequests(
                f"the device is busy: {limit} requests in flight and none finished within "
                f"{timeout:g} s; retry after {retry} s",
                details={"limit": "max_inflight_per_device", "allowed": limit},
                headers={"Retry-After": str(retry)},
            ) from None
        finally:
            slot.queued.dec()
        slot.inflight.inc()


class SlotLease:
    """Slots taken for one request; :meth:`release` frees them once, however often it is
    called, and a timer frees them if nobody does."""

    def __init__(self, slots: list[_Slot], loop: asyncio.AbstractEventLoop, longest: float) -> None:
        self._slots = slots
        self._timer = loop.call_later(longest, self.release)

    def release(self) -> None:
        self._timer.cancel()
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.release()


@dataclass
class _Slot:
    """A device's compute slots and its metric gauges."""

    semaphore: asyncio.Semaphore
    inflight: Gauge
    queued: Gauge

    def release(self) -> None:
        self.semaphore.release()
        self.inflight.dec()
