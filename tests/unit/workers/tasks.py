"""Functions the worker-process tests run in workers: module-level, so workers can import them."""

from __future__ import annotations

import ctypes
import os
import resource
import time
from typing import Any

import numpy as np
import torch

from service.errors import LimitExceeded, TooManyRequests
from service.limits import Deadline
from service.ops.render.png import Png
from service.workers.child import resident_bytes

_held: list[torch.Tensor] = []


def echo(arg: Any, deadline: Deadline) -> Any:
    return arg


def pid(arg: Any, deadline: Deadline) -> int:
    return os.getpid()


def sleep_then_pid(seconds: float, deadline: Deadline) -> int:
    time.sleep(seconds)
    return os.getpid()


def add_one_in_place(tensor: torch.Tensor, deadline: Deadline) -> None:
    tensor.add_(1)


def describe(tensors: dict[str, torch.Tensor], deadline: Deadline) -> dict[str, Any]:
    """Each tensor's sum and whether its storage is shared memory, seen from the worker."""
    return {
        name: {"sum": tensor.double().sum().item(), "shared": tensor.untyped_storage().is_shared()}
        for name, tensor in tensors.items()
    }


def where_mapped(tensor: torch.Tensor, deadline: Deadline) -> dict[str, Any]:
    """Where this worker maps the tensor's storage, and the tensor's sum as it reads it."""
    return {"address": tensor.untyped_storage().data_ptr(), "sum": tensor.double().sum().item()}


def mapped_files(arg: Any, deadline: Deadline) -> set[int]:
    """The inodes of the shared-memory files this worker maps now."""
    with open("/proc/self/maps") as maps:
        return {int(line.split()[4]) for line in maps if "/dev/shm/" in line}


def answer(spec: tuple[int, int], deadline: Deadline) -> torch.Tensor:
    """An answer of ``nbytes`` bytes all equal to ``value``, written as a route's answers are
    (into this worker's answer buffers)."""
    from service.api.binary import allocate  # noqa: PLC0415 (the worker side of the test)

    nbytes, value = spec
    out = allocate(nbytes)
    out.fill_(value)
    return out


def big_result_with_shared_memory_full(arg: Any, deadline: Deadline) -> torch.Tensor:
    """A large result, while sharing memory fails once as a full /dev/shm does."""
    from service.workers import transport  # noqa: PLC0415 (the worker side of the test)

    share = transport._shared_tensor

    def full(tensor: torch.Tensor) -> Any:
        transport._shared_tensor = share  # once: the worker serves on
        raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")

    transport._shared_tensor = full
    return torch.ones(1 << 20)


def affine(tensor: torch.Tensor, deadline: Deadline) -> dict[str, Any]:
    return {"scaled": tensor * 2 + 1, "mean": tensor.mean(), "label": "affine", "raw": b"\x00\x01"}


def threads(arg: Any, deadline: Deadline) -> int:
    return torch.get_num_threads()


def modes(arg: Any, deadline: Deadline) -> dict[str, bool]:
    return {"inference": torch.is_inference_mode_enabled(), "grad": torch.is_grad_enabled()}


def gradient(x: torch.Tensor, deadline: Deadline) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (x**3).sum().backward()
    assert x.grad is not None
    return x.grad


def deadline_of(arg: Any, deadline: Deadline) -> tuple[float, float]:
    return deadline.seconds, deadline.expires


def sleep(seconds: float, deadline: Deadline) -> str:
    time.sleep(seconds)
    return "woke"


def segfault(arg: Any, deadline: Deadline) -> None:
    ctypes.string_at(0)


def refuse(arg: Any, deadline: Deadline) -> None:
    raise LimitExceeded("max_elements", 10, 11, "the thing")


def busy(arg: Any, deadline: Deadline) -> None:
    raise TooManyRequests(
        "busy", details={"limit": "x", "allowed": 1}, headers={"Retry-After": "3"}
    )


def fail(arg: Any, deadline: Deadline) -> None:
    raise ValueError(f"bad value {arg}")


def fail_unpicklably(arg: Any, deadline: Deadline) -> None:
    class LocalError(Exception):
        pass

    raise LocalError("from a class defined in a function")


def exhaust_device(arg: Any, deadline: Deadline) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def exhaust_host(arg: Any, deadline: Deadline) -> None:
    raise MemoryError


def resident(arg: Any, deadline: Deadline) -> int:
    return resident_bytes()


def hold(nbytes: int, deadline: Deadline) -> tuple[int, int]:
    """Keep ``nbytes`` of written memory alive in the worker, as a leak would; the worker's
    pid and resident bytes."""
    _held.append(torch.ones(nbytes // 4))
    return os.getpid(), resident_bytes()


def written_bytes(nbytes: int, deadline: Deadline) -> bytes:
    """``nbytes`` bytes, every page written: an answer that crosses by value."""
    return b"\x01" * nbytes


_emptied: list[None] = []


def pretend_cuda(arg: Any, deadline: Deadline) -> int:
    """Make this worker believe CUDA is in use, its caching allocator emptied into a count;
    how many times it has been emptied so far."""
    torch.cuda.is_initialized = lambda: True  # type: ignore[method-assign]
    torch.cuda.empty_cache = lambda: _emptied.append(None)  # type: ignore[method-assign]
    return len(_emptied)


def refill_faults(nbytes: int, deadline: Deadline) -> int:
    """The page faults of a block of ``nbytes`` written, freed, then taken and written
    again: about one a page when its memory is fresh each time."""
    block = bytearray(nbytes)  # zeroed: every page written
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = bytearray(nbytes)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del again
    return faults


def free_blocks(spec: tuple[int, int], deadline: Deadline) -> int:
    """``count`` blocks of ``nbytes`` written, then freed; the resident bytes after."""
    count, nbytes = spec
    blocks = [bytearray(nbytes) for _ in range(count)]
    del blocks
    return resident_bytes()


def count_with_progress(total: int, deadline: Deadline) -> int:
    """Reports every step (the deadline keeps at most one event per interval, and the last)."""
    for done in range(1, total + 1):
        time.sleep(0.002)
        deadline.progress(done, total, "step", square=done * done)
    return total


def scheduling(arg: Any, deadline: Deadline) -> dict[str, int]:
    return {"policy": os.sched_getscheduler(0), "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def thread_count(plan: Any, deadline: Deadline) -> dict[str, Any]:
    """A compute step for ``run_job``: the threads torch uses while it runs."""
    return {"threads": torch.get_num_threads()}


def picture(nbytes: int, deadline: Deadline) -> Png:
    """A compute step for ``run_job``: a "picture" of ``nbytes`` (a counting pattern)."""
    return Png(bytes(range(256)) * (nbytes // 256), {"X-Panel-Count": "1"})


def allocate(spec: tuple[str, int], deadline: Deadline) -> int:
    """Allocate and write ``nbytes`` of private memory the way ``how`` does: ``torch``,
    ``numpy`` or ``bytes``; the bytes allocated, once freed again."""
    how, nbytes = spec
    if how == "torch":
        block: Any = torch.ones(nbytes, dtype=torch.uint8)
    elif how == "numpy":
        block = np.ones(nbytes, dtype=np.uint8)
    else:
        block = b"\x01" * nbytes
    size = len(block)
    del block
    return size
