"""torch's thread count for a block, and the cores left to work run on one thread."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import torch

from service.api.binary import Blob
from service.api.compute import ComputeJob, Envelope, encode_response, run_job
from service.limits import Deadline
from service.ops.threads import cores, torch_threads


def test_cores_are_torchs_threads_before_the_cut_to_one() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert cores() == 1  # torch's own threads use the cores
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            assert cores() == 3
        with torch_threads(2):
            assert cores() == 1
        assert torch.get_num_threads() == 3
        assert cores() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("one_thread", [True, False])
def test_a_one_thread_job_is_encoded_on_one_thread_too(one_thread: bool) -> None:
    """The answer's copies are parallel regions too: a job cut to one thread writes its
    answer on that one thread, and the worker's count is back after."""
    seen: dict[str, int] = {}

    def compute(plan: torch.Tensor, deadline: Deadline) -> dict[str, Any]:
        seen["compute"] = torch.get_num_threads()
        return {"out": plan * 2}

    def encode(content: dict[str, Any], envelope: Envelope) -> bytes:
        seen["encode"] = torch.get_num_threads()
        return encode_response(content, envelope)  # type: ignore[return-value]

    job = ComputeJob(compute, torch.arange(4.0), "json", [torch.device("cpu")], 1 << 20, encode)
    job.shared, job.one_thread = True, one_thread
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        ran = run_job(job, Deadline(10))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    expected = 1 if one_thread else 3
    assert seen == {"compute": expected, "encode": expected}
    body = ran.body.view() if isinstance(ran.body, Blob) else ran.body
    assert orjson.loads(body)["out"]["data"] == [0.0, 2.0, 4.0, 6.0]  # type: ignore[arg-type]
