"""WorkerPool with real worker processes: results, shared memory, deadlines, deaths, recycling."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from service.errors import (
    ComputeTimeout,
    DeviceOutOfMemory,
    ErrorCode,
    LimitExceeded,
    TooManyRequests,
    WorkerLost,
)
from service.limits import Deadline
from service.metrics import Metrics
from service.workers import RemoteTraceback, WorkerError, WorkerPool, buffers, child, transport
from service.workers import pool as pool_module
from service.workers.pool import _off_loop
from service.workers.transport import INLINE_TENSOR_BYTES
from tests.unit.workers import tasks

PRELOAD = ["tests.unit.workers.tasks"]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="module")
def pool(loop: asyncio.AbstractEventLoop, metrics: Metrics) -> Iterator[WorkerPool]:
    pool = WorkerPool("cpu", size=1, spares=1, preload=PRELOAD, metrics=metrics)
    loop.run_until_complete(pool.start())
    yield pool
    close(loop, pool)


def close(loop: asyncio.AbstractEventLoop, pool: WorkerPool) -> None:
    pool.close()
    loop.run_until_complete(asyncio.sleep(0.05))  # let the cancelled starts finish


def call(loop: asyncio.AbstractEventLoop, pool: WorkerPool, fn: Any, arg: Any, **kw: Any) -> Any:
    seconds = kw.pop("seconds", 20.0)
    return loop.run_until_complete(pool.run(fn, arg, Deadline(seconds), **kw))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"device": "cpu", **labels}) or 0.0


async def busy_pid(pool: WorkerPool) -> int:
    for _ in range(500):
        if pool.busy_pids:
            await asyncio.sleep(0.2)  # well inside the call
            return pool.busy_pids[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no worker became busy")


def wait_gone(pid: int, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_workers_start_ready_and_run_in_other_processes(pool, loop, metrics) -> None:
    assert len(pool.pids) == 2  # one to serve and one spare
    assert call(loop, pool, tasks.pid, None) in pool.pids
    assert call(loop, pool, tasks.pid, None) != os.getpid()
    assert sample(metrics, "torchlab_workers") == 2


def test_results_cross_intact(pool, loop) -> None:
    x = torch.linspace(-3, 3, 300_000)
    out = call(loop, pool, tasks.affine, x)
    assert torch.equal(out["scaled"], x * 2 + 1)
    assert out["mean"].item() == pytest.approx(x.mean().item(), abs=1e-6)
    assert out["label"] == "affine"
    assert out["raw"] == b"\x00\x01"
    assert out["scaled"].untyped_storage().is_shared()  # came back by shared memory


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(3.5),
        torch.zeros(0, 3),
        torch.tensor([True, False]),
        torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),
        torch.randn(5, dtype=torch.complex64),
        torch.randn(4, 4).to(torch.bfloat16),
        torch.arange(200_000, dtype=torch.float32).reshape(400, 500)[::3, 7:],
    ],
    ids=["0-d", "empty", "bool", "transposed", "complex", "bfloat16", "strided-view-of-big"],
)
def test_tensors_of_every_shape_and_dtype_cross(pool, loop, tensor: torch.Tensor) -> None:
    out = call(loop, pool, tasks.echo, tensor)
    assert out.dtype == tensor.dtype
    assert out.shape == tensor.shape
    assert torch.equal(out, tensor)


def test_big_tensors_cross_by_shared_memory_and_small_ones_by_value(pool, loop) -> None:
    big = torch.arange(1 << 20, dtype=torch.float32)
    small = torch.ones(16)
    seen = call(loop, pool, tasks.describe, {"big": big, "small": small})
    assert seen["big"] == {"sum": big.double().sum().item(), "shared": True}
    assert seen["small"] == {"sum": 16.0, "shared": False}
    assert small.untyped_storage().nbytes() <= INLINE_TENSOR_BYTES < big.untyped_storage().nbytes()

    # The worker writes into the very pages the server reads: no copy either way.
    call(loop, pool, tasks.add_one_in_place, big, autograd=True)
    assert torch.equal(big, torch.arange(1 << 20, dtype=torch.float32) + 1)
    echoed = call(loop, pool, tasks.echo, big)
    assert echoed.untyped_storage().data_ptr() == big.untyped_storage().data_ptr()


def test_a_worker_keeps_the_last_tasks_shared_memory_mapped(pool, loop) -> None:
    # The server reuses its buffers of binary bodies: a worker maps one once, and reads the
    # server's new contents through the same mapping.
    buffer = torch.zeros(1 << 20, dtype=torch.float64).share_memory_()
    seen = []
    for value in (1.0, 2.0, 3.0):
        buffer.fill_(value)
        seen.append(call(loop, pool, tasks.where_mapped, buffer))
    assert [s["sum"] for s in seen] == [float(1 << 20), float(2 << 20), float(3 << 20)]
    assert seen[0]["address"] == seen[1]["address"] == seen[2]["address"]
    # Between tasks the worker still maps it; once a task has come with other inputs, not.
    inode = os.fstat(buffer.untyped_storage()._share_fd_cpu_()[0]).st_ino
    assert inode in call(loop, pool, tasks.mapped_files, None)
    assert inode not in call(loop, pool, tasks.mapped_files, None)


def _inode(tensor: torch.Tensor) -> int:
    return os.fstat(tensor.untyped_storage()._share_fd_cpu_()[0]).st_ino


def test_an_answer_buffer_is_reused_once_the_server_has_let_it_go(pool, loop) -> None:
    size = 3 << 20
    first = call(loop, pool, tasks.answer, (size, 1))
    held = call(loop, pool, tasks.answer, (size, 2))  # the first is still held here
    assert _inode(held) != _inode(first)
    assert (first == 1).all() and (held == 2).all()  # neither overwritten
    first_file = _inode(first)
    del first
    gc.collect()
    again = call(loop, pool, tasks.answer, (size, 3))  # the first's buffer, released
    assert _inode(again) == first_file
    assert (again == 3).all() and (held == 2).all()
    assert again.numel() == size  # a view of its size, whatever the buffer's


def test_an_answer_whose_caller_is_cancelled_while_it_is_decoded_is_released_all_the_same(
    loop, monkeypatch
) -> None:
    # A large answer is unpickled in a thread; a caller cancelled meanwhile (its client gone)
    # must not leave the worker's buffer lent for good.
    monkeypatch.setattr(pool_module, "LOOP_DECODE_BYTES", 0)  # every answer in a thread
    decoding, decoded = threading.Event(), threading.Event()
    cancelled_files: list[int] = []
    loads = transport.loads

    def slow_loads(reply: Any, mapped: Any, fresh: Any) -> Any:
        decoding.set()
        time.sleep(0.2)
        outcome = loads(reply, mapped, fresh)
        cancelled_files.extend(inode for inode, _ in mapped)
        decoded.set()
        return outcome

    pool = WorkerPool("cpu", size=1, spares=0, preload=PRELOAD)
    size = 3 << 20
    try:
        call(loop, pool, tasks.pid, None)  # the worker is ready
        monkeypatch.setattr(transport, "loads", slow_loads)

        async def cancelled_while_decoded() -> None:
            running = asyncio.create_task(pool.run(tasks.answer, (size, 2), Deadline(20)))
            while not decoding.is_set():
                await asyncio.sleep(0.005)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            while not decoded.is_set():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)  # what the loop does once the thread is done

        loop.run_until_complete(cancelled_while_decoded())
        monkeypatch.setattr(transport, "loads", loads)
        assert len(cancelled_files) == 1
        gc.collect()
        # The next answers (held) are written in the worker's free buffers: the cancelled
        # answer's among them once the server has released it.
        held = [call(loop, pool, tasks.answer, (size, value)) for value in (3, 4)]
        assert cancelled_files[0] in {_inode(answer) for answer in held}
        assert [answer.unique().tolist() for answer in held] == [[3], [4]]
    finally:
        close(loop, pool)


def test_an_idle_worker_lets_go_of_its_buffers(pool, loop) -> None:
    size = 3 << 20
    shared = torch.zeros(size, dtype=torch.uint8).share_memory_()
    call(loop, pool, tasks.where_mapped, shared)
    held = call(loop, pool, tasks.answer, (size, 7))  # still held here: lent
    files = call(loop, pool, tasks.mapped_files, None)
    assert _inode(held) in files
    time.sleep(child.TRIM_WHEN_IDLE_S + 0.5)
    files = call(loop, pool, tasks.mapped_files, None)
    assert _inode(held) not in files  # the worker no longer keeps it, though it is lent
    assert _inode(shared) not in files
    assert (held == 7).all()  # and the server still reads it


def test_the_server_keeps_a_workers_last_answer_mapped_until_the_worker_is_idle(
    pool, loop, monkeypatch
) -> None:
    # The next answer in the same buffer maps nothing here: mapping an answer of a few MB
    # (its pages at once) and unmapping it once sent cost more than reading it.
    mappings: list[int] = []
    original = torch.UntypedStorage._new_shared_fd_cpu

    def counted(fd: int, size: int) -> torch.UntypedStorage:
        mappings.append(size)
        return original(fd, size)

    monkeypatch.setattr(torch.UntypedStorage, "_new_shared_fd_cpu", counted)
    size = 3 << 20
    first = call(loop, pool, tasks.answer, (size, 1))
    file = _inode(first)
    mapped = len(mappings)
    del first
    gc.collect()
    for value in (2, 3, 4):
        again = call(loop, pool, tasks.answer, (size, value))
        assert _inode(again) == file  # the same buffer, released and reused
        assert (again == value).all()
        del again
        gc.collect()
    assert len(mappings) == mapped  # and not mapped again
    assert _maps(os.getpid(), file)  # kept, though no answer uses it
    loop.run_until_complete(asyncio.sleep(buffers.IDLE_S + 0.3))
    assert not _maps(os.getpid(), file)  # the worker idle: let go
    again = call(loop, pool, tasks.answer, (size, 5))
    assert (again == 5).all()
    assert len(mappings) == mapped + 1


def _maps(pid: int, inode: int) -> bool:
    """Whether process ``pid`` maps the file ``inode`` (``/proc/<pid>/maps``)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(inode):
            return True
    return False


def test_an_idle_worker_unmaps_the_inputs_of_its_last_task(pool, loop) -> None:
    # Kept mapped while tasks follow (the server reuses its buffers), let go once idle: a
    # large input would otherwise stay in the worker's memory until its next task.
    shared = torch.zeros(3 << 20, dtype=torch.uint8).share_memory_()
    worker = call(loop, pool, tasks.pid, shared)
    assert _maps(worker, _inode(shared))
    time.sleep(child.TRIM_WHEN_IDLE_S + 0.5)
    assert not _maps(worker, _inode(shared))


def test_the_worker_that_finished_last_takes_the_next_task(loop) -> None:
    pool = WorkerPool("cpu", size=2, spares=1, preload=PRELOAD)
    loop.run_until_complete(pool.start())
    try:
        # Two at once take two workers; after them, every task goes to the one that
        # finished last (its caches warm), never to the third, which stays idle.
        async def two() -> list[int]:
            return list(
                await asyncio.gather(
                    pool.run(tasks.sleep_then_pid, 0.05, Deadline(20.0)),
                    pool.run(tasks.sleep_then_pid, 0.25, Deadline(20.0)),
                )
            )

        first, last = loop.run_until_complete(two())
        assert first != last
        after = [call(loop, pool, tasks.pid, None) for _ in range(4)]
        assert after == [last] * 4
        idle = set(pool.pids) - {first, last}
        assert len(idle) == 1  # the spare, never used
    finally:
        close(loop, pool)


def test_large_arguments_and_results_cross_by_way_of_threads_without_leaks(pool, loop) -> None:
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    x = torch.randn(3 << 20)  # 12 MiB to copy into shared memory: pickled off the event loop
    out = call(loop, pool, tasks.affine, x)
    assert torch.equal(out["scaled"], x * 2 + 1)
    blob = os.urandom(3 << 20)  # a payload past LOOP_DECODE_BYTES: unpickled off the loop
    assert call(loop, pool, tasks.echo, blob) == blob
    del x, out
    for worker in pool._idle:  # the last answer's files, kept mapped (each with its descriptor)
        worker.lent.forget()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds  # (earlier tests' workers may be reaped now)


def test_inference_mode_unless_autograd(pool, loop) -> None:
    assert call(loop, pool, tasks.modes, None) == {"inference": True, "grad": False}
    assert call(loop, pool, tasks.modes, None, autograd=True) == {"inference": False, "grad": True}
    x = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(call(loop, pool, tasks.gradient, x, autograd=True), 3 * x**2)


def test_the_deadline_crosses_as_it_is(pool, loop) -> None:
    deadline = Deadline(7.5)
    seconds, expires = loop.run_until_complete(pool.run(tasks.deadline_of, None, deadline))
    assert (seconds, expires) == (deadline.seconds, deadline.expires)


def test_service_errors_come_back_with_their_code_and_details(pool, loop) -> None:
    with pytest.raises(LimitExceeded) as refused:
        call(loop, pool, tasks.refuse, None)
    expected = LimitExceeded("max_elements", 10, 11, "the thing")
    assert refused.value.code is ErrorCode.ELEMENTS_LIMIT
    assert refused.value.status_code == 413
    assert refused.value.message == expected.message
    assert refused.value.details == {"limit": "max_elements", "allowed": 10, "requested": 11}
    assert refused.value.limit == "max_elements"

    with pytest.raises(TooManyRequests) as busy:
        call(loop, pool, tasks.busy, None)
    assert busy.value.headers == {"Retry-After": "3"}
    assert busy.value.details == {"limit": "x", "allowed": 1}


def test_other_errors_come_back_with_the_workers_traceback(pool, loop) -> None:
    with pytest.raises(ValueError, match="bad value 7") as failed:
        call(loop, pool, tasks.fail, 7)
    assert isinstance(failed.value.__cause__, RemoteTraceback)
    assert "in fail" in failed.value.__cause__.text

    with pytest.raises(WorkerError, match="LocalError: from a class defined in a function"):
        call(loop, pool, tasks.fail_unpicklably, None)


def test_memory_errors_are_503(pool, loop) -> None:
    with pytest.raises(DeviceOutOfMemory) as device:
        call(loop, pool, tasks.exhaust_device, None)
    assert device.value.status_code == 503
    assert device.value.details["reason"].startswith("CUDA out of memory. Tried to allocate")
    with pytest.raises(DeviceOutOfMemory, match="host ran out of memory"):
        call(loop, pool, tasks.exhaust_host, None)


def test_a_worker_is_held_to_its_memory_limit_while_it_computes(loop) -> None:
    limit = 256 << 20
    pool = WorkerPool(
        "cpu", size=1, spares=0, preload=PRELOAD, metrics=Metrics(), max_memory_bytes=limit
    )
    try:
        worker = call(loop, pool, tasks.pid, None)
        for how in ("torch", "numpy", "bytes"):
            with pytest.raises(DeviceOutOfMemory) as error:
                call(loop, pool, tasks.allocate, (how, 1 << 30))
            assert error.value.status_code == 503
            assert error.value.details["limit"] == "worker_max_memory_bytes"
            assert error.value.details["allowed"] == limit
            assert "worker_max_memory_bytes" in error.value.message
        assert error.value.details["reason"] != ""
        assert call(loop, pool, tasks.allocate, ("torch", 128 << 20)) == 128 << 20  # under it
        assert call(loop, pool, tasks.pid, None) == worker  # the worker lives on
    finally:
        close(loop, pool)


def test_a_worker_without_a_memory_limit_allocates_past_one(pool, loop) -> None:
    assert call(loop, pool, tasks.allocate, ("torch", 384 << 20)) == 384 << 20


def test_a_full_shared_memory_is_a_503_on_either_side(pool, loop, monkeypatch) -> None:
    with pytest.raises(DeviceOutOfMemory) as error:  # the worker's result finds no room
        call(loop, pool, tasks.big_result_with_shared_memory_full, None)
    assert error.value.status_code == 503
    assert torch.equal(call(loop, pool, tasks.echo, torch.ones(1 << 20)), torch.ones(1 << 20))

    def full(tensor: torch.Tensor) -> Any:
        raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")

    monkeypatch.setattr(transport, "_shared_tensor", full)  # the task's tensors find no room
    with pytest.raises(DeviceOutOfMemory):
        call(loop, pool, tasks.echo, torch.ones(1 << 20))
    monkeypatch.undo()
    assert call(loop, pool, tasks.pid, None) in pool.pids


def test_an_unpicklable_function_is_refused_before_any_worker_is_used(pool, loop) -> None:
    before = list(pool.pids)
    with pytest.raises(Exception, match=r"pickle|lambda"):
        call(loop, pool, lambda arg, deadline: arg, None)
    assert sorted(pool.pids) == sorted(before)


def test_the_deadline_kills_the_worker_and_a_spare_serves_at_once(pool, loop, metrics) -> None:
    kills = sample(metrics, "torchlab_worker_kills_total", reason="timeout")
    start = time.monotonic()
    with pytest.raises(ComputeTimeout) as late:
        call(loop, pool, tasks.sleep, 30, seconds=0.5)
    assert 0.45 < time.monotonic() - start < 1.5
    assert late.value.details == {"limit": "request_timeout_s", "allowed": 0.5}
    assert late.value.message == "the request ran past its time limit of 0.5 s"

    start = time.monotonic()
    assert call(loop, pool, tasks.sleep, 0) == "woke"
    assert time.monotonic() - start < 1.0
    assert sample(metrics, "torchlab_worker_kills_total", reason="timeout") == kills + 1


def test_a_worker_killed_mid_call_fails_only_its_request(pool, loop, metrics) -> None:
    died = sample(metrics, "torchlab_worker_kills_total", reason="died")

    async def scenario() -> tuple[int, BaseException]:
        running = asyncio.create_task(pool.run(tasks.sleep, 30, Deadline(20)))
        pid = await busy_pid(pool)
        os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        with pytest.raises(WorkerLost) as lost:
            await running
        return pid, lost.value

    pid, lost = loop.run_until_complete(scenario())
    assert lost.code is ErrorCode.WORKER_LOST
    assert lost.status_code == 503
    assert lost.details == {"device": "cpu", "exitcode": -signal.SIGKILL, "signal": "SIGKILL"}
    assert pid not in pool.pids
    assert call(loop, pool, tasks.sleep, 0) == "woke"
    assert sample(metrics, "torchlab_worker_kills_total", reason="died") == died + 1


def test_a_worker_that_dies_while_idle_fails_no_request(pool, loop, metrics) -> None:
    loop.run_until_complete(pool.start())
    died = sample(metrics, "torchlab_worker_kills_total", reason="died")
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
    assert call(loop, pool, tasks.echo, "served") == "served"
    assert sample(metrics, "torchlab_worker_kills_total", reason="died") == died + 2


def test_a_crash_in_native_code_is_a_lost_worker(pool, loop) -> None:
    with pytest.raises(WorkerLost) as lost:
        call(loop, pool, tasks.segfault, None)
    assert lost.value.details["signal"] == "SIGSEGV"
    assert call(loop, pool, tasks.echo, 5) == 5


def test_a_cancelled_call_kills_its_worker(pool, loop, metrics) -> None:
    cancelled = sample(metrics, "torchlab_worker_kills_total", reason="cancelled")

    async def scenario() -> int:
        running = asyncio.create_task(pool.run(tasks.sleep, 30, Deadline(20)))
        pid = await busy_pid(pool)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        return pid

    pid = loop.run_until_complete(scenario())
    assert wait_gone(pid)
    assert sample(metrics, "torchlab_worker_kills_total", reason="cancelled") == cancelled + 1
    assert call(loop, pool, tasks.echo, "next") == "next"


def test_a_result_whose_caller_was_cancelled_is_abandoned_after_its_loop_ended() -> None:
    executor = ThreadPoolExecutor(1)
    release = threading.Event()
    abandoned: list[str] = []

    def slow() -> str:
        release.wait(10)
        return "a worker"

    async def main() -> None:
        # Left running: asyncio.run cancels it on leaving, then closes the loop.
        asyncio.get_running_loop().create_task(_off_loop(executor, slow, abandoned.append))
        await asyncio.sleep(0.05)

    asyncio.run(main())
    release.set()
    executor.shutdown(wait=True)
    assert abandoned == ["a worker"]


def test_a_result_ready_when_its_caller_is_cancelled_is_abandoned_once() -> None:
    executor = ThreadPoolExecutor(1)
    abandoned: list[str] = []

    async def main() -> None:
        waiting = asyncio.create_task(_off_loop(executor, lambda: "a worker", abandoned.append))
        await asyncio.sleep(0)  # submitted
        executor.submit(lambda: None).result()  # fn has returned; the caller not resumed
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    executor.shutdown(wait=True)
    assert abandoned == ["a worker"]


def test_workers_starting_when_their_loop_ends_are_ended_not_left_behind() -> None:
    pool = WorkerPool("cpu", size=1, spares=1, preload=PRELOAD)
    launched: list[Any] = []
    launch = pool._launch

    def recorded() -> Any:
        launched.append(worker := launch())
        return worker

    pool._launch = recorded  # type: ignore[method-assign]

    async def main() -> None:
        pool._replenish()  # two starts, left running: the loop ends under them
        await asyncio.sleep(0)

    asyncio.run(main())
    end = time.monotonic() + 20
    while len(launched) < 2 and time.monotonic() < end:
        time.sleep(0.02)
    assert len(launched) == 2
    for worker in launched:
        assert wait_gone(worker.pid, within=10)
        assert worker.sock.fileno() == -1  # closed, not left to the garbage collector
    pool.close()


def test_workers_are_replaced_to_keep_the_pool_full(pool, loop, metrics) -> None:
    loop.run_until_complete(pool.start())
    assert len(pool.pids) == 2
    assert sample(metrics, "torchlab_workers") == 2
    started = sample(metrics, "torchlab_worker_starts_total")
    assert started >= 2 + 3  # the first two, and one per kill above (whatever the order)


def test_a_worker_over_the_memory_limit_is_recycled_between_requests(loop) -> None:
    metrics = Metrics()
    pool = WorkerPool("cpu", size=1, spares=1, preload=PRELOAD, metrics=metrics)
    try:
        baseline = call(loop, pool, tasks.resident, None)
        pool.max_rss_bytes = baseline + (64 << 20)
        kept = {call(loop, pool, tasks.pid, None) for _ in range(3)}
        assert kept <= set(pool.pids)  # under the limit: kept
        leaky, grown = call(loop, pool, tasks.hold, 128 << 20)
        assert grown > pool.max_rss_bytes
        assert leaky not in pool.pids
        assert wait_gone(leaky)
        assert sample(metrics, "torchlab_worker_recycles_total") == 1
        assert sample(metrics, "torchlab_worker_kills_total", reason="died") == 0
        assert call(loop, pool, tasks.resident, None) < pool.max_rss_bytes
        loop.run_until_complete(pool.start())
        assert len(pool.pids) == 2
    finally:
        close(loop, pool)


def test_an_idle_worker_keeps_nothing_of_its_last_answer(loop) -> None:
    pool = WorkerPool("cpu", size=1, spares=0, preload=PRELOAD, metrics=Metrics())
    try:
        baseline = call(loop, pool, tasks.resident, None)
        assert len(call(loop, pool, tasks.written_bytes, 64 << 20)) == 64 << 20  # by value
        time.sleep(child.TRIM_WHEN_IDLE_S + 0.5)
        assert call(loop, pool, tasks.resident, None) < baseline + (32 << 20)
    finally:
        close(loop, pool)


def test_an_idle_worker_gives_its_cuda_memory_back(loop) -> None:
    # Another worker of the same GPU may need what this one's allocator keeps cached.
    pool = WorkerPool("cpu", size=1, spares=0, preload=PRELOAD, metrics=Metrics())
    try:
        assert call(loop, pool, tasks.pretend_cuda, None) == 0
        assert call(loop, pool, tasks.pretend_cuda, None) == 0  # tasks in a row: kept
        time.sleep(child.TRIM_WHEN_IDLE_S + 0.5)
        assert call(loop, pool, tasks.pretend_cuda, None) == 1  # once idle: emptied
    finally:
        close(loop, pool)


def test_a_worker_reuses_freed_blocks_between_tasks_and_gives_them_back_when_idle(loop) -> None:
    pool = WorkerPool("cpu", size=1, spares=0, preload=PRELOAD, metrics=Metrics())
    try:
        # 8 MB written again, in the same task and in the next: no fresh page each time.
        assert call(loop, pool, tasks.refill_faults, 8 << 20) < 100
        assert call(loop, pool, tasks.refill_faults, 8 << 20) < 100
        baseline = call(loop, pool, tasks.resident, None)
        kept = call(loop, pool, tasks.free_blocks, (8, 16 << 20))  # 128 MB freed, kept
        assert kept > baseline + (96 << 20)
        time.sleep(child.TRIM_WHEN_IDLE_S + 0.5)
        assert call(loop, pool, tasks.resident, None) < kept - (96 << 20)  # trimmed
    finally:
        close(loop, pool)
