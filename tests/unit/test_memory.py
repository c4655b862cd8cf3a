"""The limit on a worker's private memory: its size, and which failures are memory's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from service import memory
from service.device import BODY_POOL, DeviceManager
from service.metrics import Metrics
from tests.conftest import make_settings


def test_the_host_memory_is_the_physical_memory_or_the_cgroups_limit_when_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    unlimited = tmp_path / "memory.max"
    unlimited.write_text("max\n")
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (str(unlimited), str(tmp_path / "absent")))
    assert memory.host_memory_bytes() == physical
    limited = tmp_path / "limit_in_bytes"
    limited.write_text(f"{physical // 4}\n")
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (str(unlimited), str(limited)))
    assert memory.host_memory_bytes() == physical // 4
    limited.write_text(f"{physical * 4}\n")  # a cgroup allowed more than there is
    assert memory.host_memory_bytes() == physical


def test_the_limit_is_the_setting_or_a_share_of_the_host_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert memory.worker_memory_limit(123 << 20, processes=4) == 123 << 20
    monkeypatch.setattr(memory, "host_memory_bytes", lambda: 16 << 30)
    assert memory.worker_memory_limit(0, processes=4) == 3 << 30  # 3/4 of 16 GiB, in 4
    assert memory.worker_memory_limit(0, processes=0) == 12 << 30
    assert memory.worker_memory_limit(0, processes=4, floor=5 << 30) == 5 << 30
    assert memory.worker_memory_limit(1 << 20, processes=4, floor=5 << 30) == 1 << 20  # set
    monkeypatch.setattr(memory, "host_memory_bytes", lambda: None)
    assert memory.worker_memory_limit(0, processes=4) == 0  # unknown: none


def test_compute_workers_on_a_cpu_are_limited_and_no_others() -> None:
    """GPU workers (their driver maps host memory of its own) and the body workers (orjson
    crashes when an allocation fails; the body limits bound their work) are not; the
    automatic limit leaves room to encode the largest answer."""
    settings = make_settings(max_response_bytes=3 << 30)
    devices = DeviceManager(settings, Metrics())
    cpu = devices._memory_limit("cpu")
    assert cpu >= 4 * (3 << 30)
    assert devices._memory_limit("cuda:0") == 0
    assert devices._memory_limit(BODY_POOL) == 0
    pinned = DeviceManager(make_settings(worker_max_memory_bytes=1 << 28), Metrics())
    assert pinned._memory_limit("cpu") == 1 << 28


def test_no_limit_is_set_for_nothing() -> None:
    assert memory.limit_private_memory(0) is None
    assert memory.limit_in_force() is None  # this process (the tests') has none
    private = memory.private_bytes()
    assert private is not None and private > 0


@pytest.mark.parametrize(
    ("exc", "failed"),
    [
        (MemoryError(), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 268435456 bytes. Error code 12"
            ),
            True,
        ),
        (RuntimeError("std::bad_alloc"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"), False),
        (ValueError("can't allocate memory"), False),
    ],
)
def test_which_failures_are_allocations(exc: BaseException, failed: bool) -> None:
    assert memory.allocation_failed(exc) is failed


def test_torchs_cpu_allocator_says_what_is_recognised() -> None:
    """The message :data:`memory.ALLOCATION_REFUSALS` matches is torch's own: an
    allocation larger than any address space fails the same way as one past a limit."""
    with pytest.raises(RuntimeError) as error:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert memory.allocation_failed(error.value)
