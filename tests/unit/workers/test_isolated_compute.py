"""DeviceManager.run_isolated: the device's slots and queue, over its pool of worker processes."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest
import torch

from service.api.binary import Blob
from service.api.compute import (
    ComputeJob,
    Encoder,
    Envelope,
    SharedPng,
    encode_response,
    run_job,
)
from service.api.inference import InferMeta, encode_infer_response
from service.device import DeviceManager
from service.errors import ComputeTimeout, LimitExceeded, TooManyRequests, WorkerLost
from service.metrics import Metrics
from service.workers import transport
from tests.conftest import make_settings
from tests.unit.workers import tasks

T = TypeVar("T")
CPU = [torch.device("cpu")]


def scenario(
    body: Callable[[DeviceManager], Awaitable[T]], *, warm: bool = True, **settings: Any
) -> T:
    """Run ``body`` against a manager whose CPU workers are started (unless not ``warm``)."""

    async def go() -> T:
        devices = DeviceManager(make_settings(**settings), Metrics())
        try:
            if warm:
                await devices.start_workers(CPU)
            return await body(devices)
        finally:
            devices.close()

    return asyncio.run(go())


def test_isolated_compute_runs_in_a_worker_in_inference_mode_unless_autograd() -> None:
    async def body(devices: DeviceManager) -> list[Any]:
        return [
            await devices.run_isolated(tasks.pid, None, CPU),
            await devices.run_isolated(tasks.threads, None, CPU),
            await devices.run_isolated(tasks.modes, None, CPU),
            await devices.run_isolated(tasks.modes, None, CPU, autograd=True),
            await devices.run_isolated(tasks.affine, torch.ones(3), CPU * 2),
        ]

    pid, threads, inference, autograd, affine = scenario(body, warm=False, worker_threads=1)
    assert pid != os.getpid()
    assert threads == 1
    assert inference == {"inference": True, "grad": False}
    assert autograd == {"inference": False, "grad": True}
    assert torch.equal(affine["scaled"], torch.full((3,), 3.0))


def test_workers_run_as_batch_work_at_the_servers_niceness() -> None:
    async def body(devices: DeviceManager) -> dict[str, int]:
        return await devices.run_isolated(tasks.scheduling, None, CPU)

    seen = scenario(body, warm=False)
    assert seen["policy"] == os.SCHED_BATCH
    assert seen["nice"] == os.getpriority(os.PRIO_PROCESS, 0)


def test_small_work_runs_on_one_thread_and_the_worker_keeps_its_count() -> None:
    def job(one_thread: bool) -> ComputeJob[None]:
        return ComputeJob(
            tasks.thread_count, None, "json", CPU, 1 << 20, shared=True, one_thread=one_thread
        )

    async def body(devices: DeviceManager) -> list[int]:
        seen = []
        for one_thread in (True, False, True, False):
            answer = (await devices.run_isolated(run_job, job(one_thread), CPU)).body
            assert isinstance(answer, Blob)  # as a worker writes it
            seen.append(orjson.loads(answer.view())["threads"])
        seen.append(await devices.run_isolated(tasks.threads, None, CPU))
        return seen

    assert scenario(
        body, warm=False, worker_threads=2, max_inflight_per_device=1, worker_spares=0
    ) == [1, 2, 1, 2, 2]


@pytest.mark.parametrize(
    "encode",
    [encode_response, functools.partial(encode_infer_response, InferMeta("relu", "1", None))],
    ids=["torchlab", "v2"],
)
def test_a_large_json_answer_leaves_the_worker_in_shared_memory(encode: Encoder) -> None:
    # Pickled through the worker's socket, a large body would cost a copy each way, and the
    # worker would hold the pickle until its next task.
    content = {"output": torch.arange(300_000, dtype=torch.float32)}
    in_worker = encode(content, Envelope("json", "cpu", 1.5, True))
    in_server = encode(content, Envelope("json", "cpu", 1.5, False))
    assert isinstance(in_worker, Blob)
    assert isinstance(in_server, bytes) and len(in_server) > 2 << 20
    frame = transport.dumps(in_worker)
    try:
        assert frame.fds and len(frame.payload) < 4096  # the bytes stay in shared memory
        crossed = transport.loads(frame)
    finally:
        frame.close()
    assert bytes(crossed.view()) == in_server
    answer = orjson.loads(in_server)
    data = answer["outputs"][0]["data"] if "outputs" in answer else answer["output"]["data"]
    assert data == content["output"].tolist()


def test_a_large_picture_leaves_the_worker_in_shared_memory_and_one_too_large_is_413() -> None:
    def job(nbytes: int, allowed: int = 1 << 30) -> ComputeJob[int]:
        return ComputeJob(tasks.picture, nbytes, "json", CPU, allowed, shared=True)

    async def body(devices: DeviceManager) -> list[Any]:
        answers = [await devices.run_isolated(run_job, job(n), CPU) for n in (4096, 3 << 20)]
        with pytest.raises(LimitExceeded) as refused:
            await devices.run_isolated(run_job, job(8192, allowed=4096), CPU)
        return [*(ran.body for ran in answers), refused.value]

    small, large, refused = scenario(body)
    expected = bytes(range(256)) * ((3 << 20) // 256)
    assert isinstance(large, SharedPng) and large.headers == {"X-Panel-Count": "1"}
    assert isinstance(large.blob.data, torch.Tensor)  # came by its shared memory
    assert bytes(large.blob.view()) == expected
    assert isinstance(small, SharedPng) and bytes(small.blob.view()) == expected[:4096]
    assert refused.code == "response_bytes_limit"
    assert refused.details == {"limit": "max_response_bytes", "allowed": 4096, "requested": 8192}


def test_without_isolation_compute_runs_in_a_thread_of_the_server() -> None:
    async def body(devices: DeviceManager) -> list[Any]:
        return [
            await devices.run_isolated(tasks.pid, None, CPU),
            await devices.run_isolated(tasks.modes, None, CPU),
        ]

    pid, modes = scenario(body, warm=False, isolate=False)
    assert pid == os.getpid()
    assert modes == {"inference": True, "grad": False}


def test_the_deadline_frees_the_slot_at_once_and_the_queue_still_answers_429() -> None:
    async def body(devices: DeviceManager) -> tuple[BaseException, BaseException, float, Metrics]:
        first = asyncio.create_task(devices.run_isolated(tasks.sleep, 30, CPU))
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyRequests) as busy:
            await devices.run_isolated(tasks.echo, 1, CPU)
        with pytest.raises(ComputeTimeout) as late:
            await first
        start = time.monotonic()
        assert await devices.run_isolated(tasks.echo, 7, CPU) == 7
        return busy.value, late.value, time.monotonic() - start, devices.metrics

    busy, late, next_call_s, metrics = scenario(
        body, max_inflight_per_device=1, request_timeout_s=0.5, queue_timeout_s=0.1
    )
    assert busy.headers == {"Retry-After": "1"}
    assert late.details == {"limit": "request_timeout_s", "allowed": 0.5}
    assert next_call_s < 1.0
    labels = {"device": "cpu", "reason": "timeout"}
    assert metrics.registry.get_sample_value("torchlab_worker_kills_total", labels) == 1


def test_a_lost_worker_or_a_cancelled_request_frees_the_slot() -> None:
    async def body(devices: DeviceManager) -> str:
        with pytest.raises(WorkerLost):
            await devices.run_isolated(tasks.segfault, None, CPU)
        running = asyncio.create_task(devices.run_isolated(tasks.sleep, 30, CPU))
        await asyncio.sleep(0.2)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        result: str = await devices.run_isolated(tasks.sleep, 0, CPU)
        return result

    assert scenario(body, max_inflight_per_device=1, queue_timeout_s=0.1) == "woke"


def test_a_request_running_at_close_fails_as_lost() -> None:
    async def body(devices: DeviceManager) -> BaseException:
        running = asyncio.create_task(devices.run_isolated(tasks.sleep, 30, CPU))
        await asyncio.sleep(0.2)
        devices.close()
        with pytest.raises(WorkerLost) as lost:
            await running
        return lost.value

    lost = scenario(body)
    assert lost.message == "the service stopped while computing this request; retry"


def test_close_kills_the_workers() -> None:
    async def body(devices: DeviceManager) -> list[int]:
        pids = [await devices.run_isolated(tasks.pid, None, CPU)]
        gauge = devices.metrics.registry.get_sample_value("torchlab_workers", {"device": "cpu"})
        assert gauge == 3  # max_inflight_per_device 2, one spare
        devices.close()
        return pids

    (pid,) = scenario(body)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"worker {pid} outlived close()")
