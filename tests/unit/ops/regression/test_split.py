"""The train/test split and an epoch's mini-batches."""

from __future__ import annotations

import pytest
import torch

from service.errors import InvalidInput
from service.ops.context import make_generator
from service.ops.regression.split import minibatches, split_samples


def test_split_sizes_and_seeds() -> None:
    first = split_samples(20, 0.25, make_generator(0))
    assert (first.train.numel(), first.test.numel()) == (15, 5)
    assert sorted([*first.train.tolist(), *first.test.tolist()]) == list(range(20))
    again = split_samples(20, 0.25, make_generator(0))
    assert torch.equal(first.test, again.test)
    other = split_samples(20, 0.25, make_generator(1))
    assert not torch.equal(first.test, other.test)
    assert split_samples(20, 0.01, make_generator(0)).test.numel() == 1  # ceil, as sklearn
    with pytest.raises(InvalidInput) as info:
        split_samples(3, 0.5, make_generator(0))
    assert info.value.code == "too_few_samples"


def test_no_test_size_trains_on_every_sample() -> None:
    split = split_samples(7, 0.0, make_generator(0))
    assert split.train.tolist() == list(range(7)) and split.test.numel() == 0


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (10, 5), (7, 1)])
def test_minibatches_cover_every_sample_once(n: int, batch_size: int) -> None:
    batches = minibatches(n, batch_size, make_generator(0))
    assert [int(b.numel()) for b in batches] == [
        min(batch_size, n - start) for start in range(0, n, batch_size)
    ]
    assert sorted(torch.cat(batches).tolist()) == list(range(n))
    again = minibatches(n, batch_size, make_generator(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize("batch_size", [None, 10, 50])
def test_one_batch_of_everything_by_default(batch_size: int | None) -> None:
    (batch,) = minibatches(10, batch_size, make_generator(0))
    assert batch.tolist() == list(range(10))
