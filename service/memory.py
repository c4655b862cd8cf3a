"""A hard limit on the memory of a worker process while it runs a task.

The cost model charges what a request's tensors take before the work starts, but whatever
it misses (a temporary of a kernel, an integer path that upcasts, a library's own buffers) a
worker would take for as long as the host has memory, and past that the kernel's
out-of-memory killer picks a process: maybe the server. So each CPU worker runs under
``RLIMIT_DATA``, the kernel's bound on a process's private writable memory (its heap and
anonymous mappings, where torch's and numpy's buffers live; not the shared memory of the
tensors that cross, nor the code it maps). An allocation past the limit fails at once in the
worker: torch's CPU allocator raises a ``RuntimeError`` and Python a ``MemoryError``, the
request is answered 503 ``device_out_of_memory`` naming the limit, and the worker goes on.

The limit is ``worker_max_memory_bytes`` above what the worker holds once it is ready
(torch and the preloaded modules); by default a share of the host's memory (or its cgroup's
limit, in a container): :data:`MEMORY_SHARE` of it divided among the processes that may run
tasks at once, and room to encode the largest answer. GPU workers are not limited (the CUDA
driver maps large areas of host memory of its own), nor the body workers, which parse
bodies bounded by the body limits with orjson, and orjson crashes when an allocation fails
(``service.device.DeviceManager._memory_limit``).
"""

from __future__ import annotations

import contextlib
import os
import resource

import torch

MEMORY_SHARE = 0.75
"""The fraction of the host's memory that the workers running at once may take, together."""

ALLOCATION_REFUSALS = ("can't allocate memory", "std::bad_alloc")
"""What a ``RuntimeError`` says when the system refused memory: torch's CPU allocator, and
C++'s ``new`` in torch's kernels (a softmax's scratch, for one)."""

_limit: dict[str, int] = {}
"""``"extra"``: the limit :func:`limit_private_memory` set in this process, once it has."""

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def host_memory_bytes() -> int | None:
    """The memory this process's host gives it: the physical memory, or its cgroup's limit
    when that is lower (a container's); ``None`` where neither can be read."""
    sizes = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in _CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError), open(path) as limit:
            sizes.append(int(limit.read().strip()))  # "max" (no limit) is a ValueError
    sizes = [size for size in sizes if size > 0]
    return min(sizes) if sizes else None


def worker_memory_limit(configured: int, processes: int, floor: int = 0) -> int:
    """The private memory each worker may take beyond its own at rest: ``configured`` when
    it is set (> 0), else :data:`MEMORY_SHARE` of the host's memory divided among the
    ``processes`` that may run tasks at once, and at least ``floor``; 0 (no limit) where the
    host's memory is unknown."""
    if configured > 0:
        return configured
    host = host_memory_bytes()
    if host is None:
        return 0
    return max(int(host * MEMORY_SHARE) // max(processes, 1), floor)


def private_bytes() -> int | None:
    """This process's private writable memory as the kernel counts it for ``RLIMIT_DATA``
    (``VmData``); ``None`` where ``/proc`` does not tell."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


def limit_private_memory(extra: int) -> int | None:
    """Limit this process's private memory to what it holds now plus ``extra`` bytes
    (``RLIMIT_DATA``, soft and hard); the limit set, or ``None`` where it cannot be (no
    ``/proc``, no such limit on this system, ``extra`` 0)."""
    now = private_bytes()
    if extra <= 0 or now is None:
        return None
    limit = now + extra
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ValueError, OSError, AttributeError):
        return None
    _limit["extra"] = extra
    return limit


def limit_in_force() -> int | None:
    """The private memory this process may take beyond its own at rest, as
    :func:`limit_private_memory` set it (in a worker); ``None`` when it has not."""
    return _limit.get("extra")


def allocation_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed: on a device (torch's
    ``OutOfMemoryError``) or on the host (a ``MemoryError``, or a ``RuntimeError`` of
    torch's CPU allocator or of C++'s ``new``: at a worker's limit, for instance). Such a
    failure is the device manager's 503, never a 422 for the caller's input."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return any(refusal in message for refusal in ALLOCATION_REFUSALS)
