"""torch's thread count for a block, and the cores left to work run on one thread."""

from __future__ import annotations

import torch

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
