"""Progress events: the deadline's pacing, their frames and their way out of a worker."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any

import pytest

from service.limits import PROGRESS_INTERVAL_S, Deadline
from service.workers import WorkerPool
from service.workers.transport import dumps, progress_event, progress_frame
from tests.unit.workers import tasks


def test_progress_is_a_no_op_when_nobody_follows() -> None:
    deadline = Deadline(5)
    deadline.progress(1, 10, "step")  # no reporter: nothing to do, nothing raised


def test_events_are_paced_but_the_last_always_goes() -> None:
    deadline = Deadline(5)
    events: list[dict[str, Any]] = []
    deadline.reporter = events.append
    start = time.monotonic()
    for done in range(1, 1001):
        deadline.progress(done, 1000, "step", loss=1.0 / done)
    elapsed = time.monotonic() - start
    assert events[0] == {"done": 1, "total": 1000, "unit": "step", "loss": 1.0}
    assert events[-1] == {"done": 1000, "total": 1000, "unit": "step", "loss": 1 / 1000}
    assert len(events) <= 2 + elapsed / PROGRESS_INTERVAL_S


def test_final_events_skip_the_pacing_but_never_repeat() -> None:
    deadline = Deadline(5)
    events: list[dict[str, Any]] = []
    deadline.reporter = events.append
    deadline.progress(1, 100, "epoch")
    deadline.progress(7, 100, "epoch")  # paced out
    deadline.progress(7, 100, "epoch", final=True)  # stopped early at 7: goes
    deadline.progress(7, 100, "epoch", final=True)  # already said
    assert [e["done"] for e in events] == [1, 7]


def test_the_reporter_stays_in_its_process() -> None:
    deadline = Deadline(5, streaming=True)
    deadline.reporter = print
    copy = pickle.loads(pickle.dumps(deadline))
    assert copy.reporter is None and copy.streaming


def test_progress_frames_are_told_from_pickles() -> None:
    event = {"done": 3, "total": 9, "unit": "run", "device": "cpu"}
    assert progress_event(progress_frame(event)) == event
    frame = dumps({"done": 3})
    try:
        assert progress_event(frame) is None
    finally:
        frame.close()


@pytest.mark.parametrize("follow", [True, False])
def test_a_workers_events_reach_the_server_before_its_result(follow: bool) -> None:
    loop = asyncio.new_event_loop()
    pool = WorkerPool("cpu", size=1, spares=0, preload=["tests.unit.workers.tasks"])
    events: list[dict[str, Any]] = []
    try:
        loop.run_until_complete(pool.start())
        on_progress = events.append if follow else None
        run = pool.run(tasks.count_with_progress, 300, Deadline(30), on_progress=on_progress)
        assert loop.run_until_complete(run) == 300
        # The pool still serves: no event was left unread in the worker's socket.
        assert loop.run_until_complete(pool.run(tasks.echo, "next", Deadline(30))) == "next"
    finally:
        pool.close()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()
    if not follow:
        assert events == []
        return
    assert events[0]["done"] == 1 and events[-1] == {
        "done": 300,
        "total": 300,
        "unit": "step",
        "square": 90000,
    }
    done = [e["done"] for e in events]
    assert done == sorted(done) and 2 <= len(done) < 300
