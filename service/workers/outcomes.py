"""What a task's outcome looks like on the wire, and how a worker's exception is raised again.

An exception crosses as its class, ``args`` and ``__dict__`` and is rebuilt without calling
``__init__``: a :class:`~service.errors.ServiceError` comes back with the same status, code,
message, details and headers whatever its constructor's signature (``LimitExceeded`` takes
four arguments, ``BaseException.__reduce__`` would call it with one). An exception that
cannot cross (an unpicklable class or state) comes back as a :class:`WorkerError` naming it.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from service import memory
from service.errors import DeviceOutOfMemory, ServiceError

_cuda_initialized: Callable[[], bool] = torch.cuda.is_initialized


class WorkerError(RuntimeError):
    """Stands in for an exception raised in a worker that could not be sent back as it was."""


class RemoteTraceback(Exception):
    """The worker's traceback, attached as ``__cause__`` of an unexpected error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def out_of_memory(exc: BaseException) -> DeviceOutOfMemory:
    """The 503 for an allocation that failed (:func:`~service.memory.allocation_failed`): on
    the device, at this worker's memory limit, or on the host."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
    reason = reason[max(reason.find("DefaultCPUAllocator"), 0) :][:300]  # past torch's file:line
    if isinstance(exc, torch.OutOfMemoryError):
        if _cuda_initialized():
            torch.cuda.empty_cache()
        return DeviceOutOfMemory(
            "the device ran out of memory; try smaller tensors or another device",
            details={"reason": reason},
        )
    limit = memory.limit_in_force()
    if limit is not None:
        return DeviceOutOfMemory(
            f"the request needed more memory than a worker may take ({limit:,} bytes beyond "
            "what it holds at rest, worker_max_memory_bytes); try smaller tensors",
            details={"reason": reason, "limit": "worker_max_memory_bytes", "allowed": limit},
        )
    return DeviceOutOfMemory("the host ran out of memory", details={"reason": reason})


@dataclass
class Failure:
    """An exception on the wire: enough to raise it again on the other side."""

    cls: type[BaseException]
    args: tuple[Any, ...]
    state: dict[str, Any]
    traceback: str | None

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        """Describe ``exc``; memory errors become :class:`DeviceOutOfMemory` first."""
        if memory.allocation_failed(exc):
            exc = out_of_memory(exc)
        expected = isinstance(exc, ServiceError)
        text = None if expected else "".join(traceback.format_exception(exc))
        return cls(type(exc), exc.args, dict(vars(exc)), text)

    def stand_in(self) -> Failure:
        """The same failure as a :class:`WorkerError`, for when it cannot be pickled."""
        name = f"{self.cls.__module__}.{self.cls.__qualname__}"
        message = f"{name}: {self.args[0] if len(self.args) == 1 else self.args}"
        return Failure(WorkerError, (message,), {}, self.traceback)

    def exception(self) -> BaseException:
        """The exception to raise in the caller."""
        exc = self.cls.__new__(self.cls, *self.args)
        exc.args = self.args
        vars(exc).update(self.state)
        if self.traceback is not None:
            exc.__cause__ = RemoteTraceback(self.traceback)
        return exc


def picklable(failure: Failure) -> bool:
    """Whether ``failure`` survives a pickle round trip (checked in the worker, before sending)."""
    try:
        pickle.loads(pickle.dumps(failure))  # noqa: S301 (our own bytes)
    except Exception:
        return False
    return True
