"""Every pooling kind against ``torch.nn.functional``, and its plan on ``meta``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from service.errors import OpError
from service.limits import Budget
from service.ops.vision.pool import PoolSpec, plan_pool, pool2d


def big_budget() -> Budget:
    return Budget(1 << 30, 1 << 32, 1e15)


POOLS = [
    (PoolSpec("max", 2, 2), lambda x: F.max_pool2d(x, 2, 2)),
    (PoolSpec("max", 3, 2, 1, 2, True), lambda x: F.max_pool2d(x, 3, 2, 1, 2, ceil_mode=True)),
    (PoolSpec("avg", (2, 3)), lambda x: F.avg_pool2d(x, (2, 3))),
    (
        PoolSpec("avg", 3, 2, 1, count_include_pad=False, ceil_mode=True),
        lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    ),
    (PoolSpec("lp", 2, norm_type=3.0), lambda x: F.lp_pool2d(x, 3.0, 2)),
    (PoolSpec("lp", 3, 1), lambda x: F.lp_pool2d(x, 2.0, 3, 1)),
    (PoolSpec("adaptive_avg", output_size=(5, 7)), lambda x: F.adaptive_avg_pool2d(x, (5, 7))),
    (
        PoolSpec("adaptive_avg", output_size=(4, None)),
        lambda x: F.adaptive_avg_pool2d(x, (4, None)),
    ),
    (PoolSpec("adaptive_max", output_size=3), lambda x: F.adaptive_max_pool2d(x, 3)),
]


@pytest.mark.parametrize(("spec", "expected"), POOLS, ids=[spec.label for spec, _ in POOLS])
def test_pooling_kinds_match_torch(spec: PoolSpec, expected: object) -> None:
    x = torch.rand(2, 3, 17, 22, generator=torch.Generator().manual_seed(4))
    want = expected(x)  # type: ignore[operator]
    torch.testing.assert_close(pool2d(x, spec), want)
    assert plan_pool(spec, x.shape, x.dtype, big_budget()) == list(want.shape)


def test_the_tutorials_max_pooling() -> None:
    assert plan_pool(PoolSpec("max", 2, 2), [1, 2, 508, 764], torch.float32, big_budget()) == [
        1,
        2,
        254,
        382,
    ]
    with pytest.raises(OpError):
        plan_pool(PoolSpec("max", 2, padding=3), [1, 1, 8, 8], torch.float32, big_budget())
