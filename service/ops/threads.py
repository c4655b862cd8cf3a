"""torch's threads for a piece of work, and the cores that work on one of them may still fill.

Parallel work waits at each of its parallel regions for every thread of the team, and on a
machine shared with other processes a thread left waiting for a core costs a scheduler
slice. Work made of many short regions therefore runs on one of torch's threads
(:data:`service.api.compute.ONE_THREAD_SECONDS`), and where it has a few large independent
pieces (the row blocks of a tall QR) it runs them side by side, one thread each
(:func:`cores`): a piece held up by a busy core delays only itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_before: ContextVar[int] = ContextVar("torch_threads_before", default=1)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (it is the process's);
    inside it, :func:`cores` gives the count there was before."""
    before = torch.get_num_threads()
    token = _before.set(before)
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _before.reset(token)


def cores() -> int:
    """How many single-threaded pieces of work may run side by side: torch's thread count
    before :func:`torch_threads` cut it to one, and 1 anywhere else (where torch's own
    threads, or other requests' work in the same process, use the cores)."""
    return _before.get() if torch.get_num_threads() == 1 else 1


def flush_subnormals() -> None:
    """Subnormal floats (under 1.2e-38 in float32, 2.2e-308 in float64) count as zero in
    arithmetic on this thread and every thread it starts from now on, torch's team among
    them (the flag is per thread: set once its threads exist, it leaves them as they are). A
    CPU takes a slow path for each subnormal operand: a 1024² float32 matmul of them took
    9.7 s, 70 ms otherwise, and torch's kernels are charged at the rates of normal numbers."""
    torch.set_flush_denormal(True)


class SubnormalsFlushed(contextlib.AbstractContextManager[None]):
    """:func:`flush_subnormals` for the block, on this thread only (the event loop's, where
    requests are validated: a ``sigma`` of 5e-324 must still be greater than 0). A plain
    context manager, not a generator's: it wraps every tiny request run on the event loop."""

    __slots__ = ()

    def __enter__(self) -> None:
        torch.set_flush_denormal(True)

    def __exit__(self, *exc_info: object) -> None:
        torch.set_flush_denormal(False)
