"""Limits (FLOP estimates, budgets, deadlines) and the device manager, without HTTP."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from service.device import DeviceManager
from service.errors import (
    ComputeTimeout,
    DeviceOutOfMemory,
    DeviceUnavailable,
    LimitExceeded,
    TooManyRequests,
)
from service.limits import Budget, Deadline, estimate_matmul_flops
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((7, 5), (5, 3)),
        ((4, 7, 5), (5, 3)),
        ((2, 1, 7, 5), (4, 5, 3)),
        ((5,), (5, 3)),
        ((10000, 1000), (1000, 2000)),
    ],
)
def test_matmul_flops_match_torchs_flop_counter(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    with FlopCounterMode(display=False) as counter:
        torch.matmul(torch.empty(a, device="meta"), torch.empty(b, device="meta"))
    assert estimate_matmul_flops(a, b) == counter.get_total_flops()


def test_matrix_vector_flops() -> None:
    # torch's flop counter does not count matrix-vector products; 2·m·k by hand.
    assert estimate_matmul_flops((7, 5), (5,)) == 2 * 7 * 5
    assert estimate_matmul_flops((5,), (5,)) == 2 * 5


def test_budget_refuses_a_tensor_over_the_element_limit() -> None:
    budget = Budget(max_elements=100, max_total_elements=150, max_flops=1e3)
    budget.charge_tensor(100, "a")
    with pytest.raises(LimitExceeded) as refused:
        budget.charge_tensor(101, "b")
    assert refused.value.details == {"limit": "max_elements", "allowed": 100, "requested": 101}
    with pytest.raises(LimitExceeded) as total:
        budget.charge_tensor(60, "c")
    assert total.value.details["limit"] == "max_total_elements"
    assert total.value.details["requested"] == 160
    budget.charge_flops(900, "d")
    with pytest.raises(LimitExceeded) as flops:
        budget.charge_flops(200, "e")
    assert flops.value.details == {"limit": "max_flops", "allowed": 1e3, "requested": 1100}
    assert flops.value.status_code == 413


def test_deadline_expires_and_can_be_cancelled() -> None:
    assert Deadline(60).remaining() > 59
    Deadline(60).check()
    expired = Deadline(0.001)
    time.sleep(0.01)
    with pytest.raises(ComputeTimeout):
        expired.check()
    cancelled = Deadline(60)
    cancelled.cancelled = True
    with pytest.raises(ComputeTimeout):
        cancelled.check()


def test_device_resolution() -> None:
    devices = DeviceManager(make_settings())
    assert devices.resolve(None) == devices.default
    assert devices.resolve("cpu") == torch.device("cpu")
    expected_auto = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert devices.resolve("auto") == torch.device(expected_auto)
    with pytest.raises(DeviceUnavailable) as absent:
        devices.resolve(f"cuda:{torch.cuda.device_count()}")
    assert absent.value.status_code == 422
    assert absent.value.details["available"] == devices.available


def test_an_absent_default_device_fails_at_start() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    devices = DeviceManager(make_settings(device="cuda"))  # builds without probing CUDA
    with pytest.raises(DeviceUnavailable):
        devices.start()


def run(devices: DeviceManager, fn, **kwargs):
    async def go():
        try:
            return await devices.run(fn, [torch.device("cpu")], **kwargs)
        finally:
            await asyncio.sleep(0.01)  # let the compute thread's release land

    return asyncio.run(go())


def test_out_of_memory_is_503_and_frees_the_slot() -> None:
    devices = DeviceManager(make_settings(max_inflight_per_device=1))

    def exhaust(deadline: Deadline) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(DeviceOutOfMemory) as oom:
        run(devices, exhaust)
    assert oom.value.status_code == 503
    assert "Tried to allocate" in oom.value.details["reason"]
    assert run(devices, lambda deadline: 42) == 42  # the only slot is free again


def test_compute_runs_in_inference_mode_unless_autograd() -> None:
    devices = DeviceManager(make_settings())
    assert run(devices, lambda deadline: torch.is_inference_mode_enabled()) is True
    assert run(devices, lambda d: torch.is_inference_mode_enabled(), autograd=True) is False

    def mode(arg: int, deadline: Deadline) -> tuple[int, bool]:
        return arg, torch.is_inference_mode_enabled()

    assert devices.run_inline(mode, 7) == (7, True)
    assert devices.run_inline(mode, 8, autograd=True) == (8, False)


def test_time_limit_and_queue_limit() -> None:
    devices = DeviceManager(
        make_settings(max_inflight_per_device=1, request_timeout_s=0.2, queue_timeout_s=0.1)
    )

    def slow(deadline: Deadline) -> None:
        while True:
            time.sleep(0.01)
            deadline.check()

    async def scenario() -> tuple[BaseException, BaseException, int]:
        first = asyncio.create_task(devices.run(slow, [torch.device("cpu")]))
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyRequests) as busy:
            await devices.run(lambda d: 1, [torch.device("cpu")])
        with pytest.raises(ComputeTimeout) as late:
            await first
        await asyncio.sleep(0.1)  # the abandoned work stops at its next check
        after = await devices.run(lambda d: 7, [torch.device("cpu")])
        return busy.value, late.value, after

    busy, late, after = asyncio.run(scenario())
    assert busy.headers == {"Retry-After": "1"}
    assert late.details["limit"] == "request_timeout_s"
    assert after == 7


def test_work_whose_caller_is_cancelled_stops_at_its_next_check_and_frees_its_slot() -> None:
    # A client gone (the route cancels its work): a thread cannot be stopped, but the work
    # sees its deadline cancelled at its next check, and its slot is free then, not at 30 s.
    devices = DeviceManager(
        make_settings(max_inflight_per_device=1, request_timeout_s=30, queue_timeout_s=0.5)
    )
    stopped = threading.Event()

    def slow(deadline: Deadline) -> None:
        try:
            while True:
                time.sleep(0.01)
                deadline.check()
        finally:
            stopped.set()

    async def scenario() -> int:
        first = asyncio.create_task(devices.run(slow, [torch.device("cpu")]))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await devices.run(lambda d: 7, [torch.device("cpu")])  # waits for the slot

    assert asyncio.run(scenario()) == 7
    assert stopped.is_set()
