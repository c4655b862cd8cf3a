"""The device manager: which devices exist, which one a request gets, and how many run at once.

CUDA is probed when the manager is built (in the app's lifespan), never at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from prometheus_client import Gauge

from service.config import Settings
from service.errors import ComputeTimeout, DeviceOutOfMemory, DeviceUnavailable, TooManyRequests
from service.limits import Deadline
from service.metrics import Metrics

T = TypeVar("T")


class DeviceManager:
    """Chooses devices, bounds concurrent compute per device and runs compute off the event loop."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.default = self._resolve(settings.device, "TORCHLAB_DEVICE")
        self._slots: dict[str, _Slot] = {}
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Fresh compute threads and slots, bound to the event loop that serves from now on."""
        self.close()
        self._slots = {}
        workers = self.settings.limits.max_inflight_per_device * (1 + self.cuda_count) + 2
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compute")

    def close(self) -> None:
        """Stop taking compute work; running work finishes in the background."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

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
        inline: bool = False,
    ) -> T:
        """Run ``fn(deadline)`` in a compute thread once every device has a free slot.

        Waits at most ``queue_timeout_s`` for the slots (then 429 with ``Retry-After``) and
        ``request_timeout_s`` for the result (then 504; the work stops at its next
        ``deadline.check()`` and keeps its slots until it has). Runs under
        ``torch.inference_mode()`` unless ``autograd``.

        ``inline`` runs ``fn`` at once on the event loop instead: for work the caller has
        measured as tiny (microseconds), where a thread hop would cost more than the work.
        """
        if inline:
            mode = contextlib.nullcontext() if autograd else torch.inference_mode()
            with mode:
                return fn(Deadline(self.settings.limits.request_timeout_s))
        if self._executor is None:
            self.start()
        slots = [self._slot(name) for name in sorted({str(device) for device in devices})]
        await self._acquire(slots)
        loop = asyncio.get_running_loop()
        deadline = Deadline(self.settings.limits.request_timeout_s)

        def release() -> None:
            for slot in slots:
                slot.release()

        def work() -> T:
            try:
                mode = contextlib.nullcontext() if autograd else torch.inference_mode()
                with mode:
                    return fn(deadline)
            except torch.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise DeviceOutOfMemory(
                    "the device ran out of memory; try smaller tensors or another device",
                    details={"reason": str(exc).splitlines()[0]},
                ) from exc
            except MemoryError as exc:
                raise DeviceOutOfMemory("the host ran out of memory") from exc
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


@dataclass
class _Slot:
    """A device's compute slots and its metric gauges."""

    semaphore: asyncio.Semaphore
    inflight: Gauge
    queued: Gauge

    def release(self) -> None:
        self.semaphore.release()
        self.inflight.dec()
