"""Batching transformed pictures: the first batch as DataLoader makes it, per-channel
statistics as numpy takes them, and the grid's size refused before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from service.errors import InvalidInput, LimitExceeded
from service.ops.data import batches
from service.ops.data.batches import (
    channel_stats,
    charge_batches,
    check_grid,
    class_labels,
    first_batch,
)
from service.ops.render.images import grid_layout
from tests.unit.ops.data.helpers import timed_budget

PICTURES = [
    torch.randint(0, 256, (3, 4, 5), generator=torch.Generator().manual_seed(i)) for i in range(10)
]
TARGETS = [i % 3 for i in range(10)]


@pytest.mark.parametrize(
    ("batch_size", "shuffle", "drop_last", "seed"),
    [
        (4, False, False, None),
        (4, True, False, 3),
        (4, True, True, 3),
        (10, True, False, 0),
        (16, False, False, None),
    ],
)
def test_the_first_batch_is_dataloaders(
    batch_size: int, shuffle: bool, drop_last: bool, seed: int | None
) -> None:
    batch = first_batch(
        PICTURES, TARGETS, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed
    )
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    loader = DataLoader(
        list(zip(PICTURES, TARGETS, strict=True)),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
    )
    x, y = next(iter(loader))
    torch.testing.assert_close(batch.x, x)
    torch.testing.assert_close(batch.y, y)
    assert batch.n_batches == len(loader)


def test_no_batch_left_by_drop_last() -> None:
    with pytest.raises(InvalidInput) as info:
        first_batch(PICTURES, TARGETS, 11, drop_last=True)
    assert info.value.code == "empty_batch"


def test_pictures_of_different_sizes_in_one_batch() -> None:
    mixed = [PICTURES[0], torch.zeros(3, 6, 5, dtype=PICTURES[0].dtype)]
    with pytest.raises(InvalidInput) as info:
        first_batch(mixed, [0, 1], 2)
    assert info.value.code == "size_mismatch"
    assert info.value.details == {"shapes": [[3, 4, 5], [3, 6, 5]]}
    assert first_batch(mixed, [0, 1], 1).n_batches == 2


def test_channel_statistics_over_every_pixel() -> None:
    mixed_sizes = [
        PICTURES[0].float() / 255,
        torch.rand(3, 7, 2, generator=torch.Generator().manual_seed(9)),
    ]
    mean, std = channel_stats(mixed_sizes)
    flat = np.concatenate([t.double().numpy().reshape(3, -1) for t in mixed_sizes], axis=1)
    np.testing.assert_allclose(mean, flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(axis=1, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("block", [1, 50, 1 << 22])
def test_channel_statistics_combine_block_by_block(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pictures of many sizes, with a large common offset (where a sum of squares would
    lose every digit), reduced in blocks of a picture, of ~50 pixels or all at once."""
    monkeypatch.setattr(batches, "STATS_BLOCK_ELEMENTS", block)
    generator = torch.Generator().manual_seed(4)
    pictures = [
        1e6 + torch.randn(2, 1 + i % 5, 3 + i % 7, dtype=torch.float64, generator=generator)
        for i in range(40)
    ]
    pictures.append(torch.zeros(2, 0, 4, dtype=torch.float64))  # no pixel: no weight
    mean, std = channel_stats(pictures)
    flat = np.concatenate([t.numpy().reshape(2, -1) for t in pictures], axis=1)
    np.testing.assert_allclose(mean, flat.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(std, flat.std(axis=1, ddof=1), rtol=1e-9)


def test_one_pixel_has_no_spread() -> None:
    mean, std = channel_stats([torch.tensor([[[5]]], dtype=torch.uint8)])
    assert (mean, std) == ([5.0], [0.0])


def test_channels_must_agree() -> None:
    with pytest.raises(InvalidInput) as info:
        channel_stats([torch.zeros(1, 2, 2), torch.zeros(3, 2, 2)])
    assert info.value.code == "channel_mismatch"
    assert info.value.details == {"channels": [1, 3]}


def test_class_labels() -> None:
    assert class_labels(["cat", "dog"], torch.tensor([1, 0, 1])) == ["dog", "cat", "dog"]


def test_the_grid_is_refused_as_drawing_it_would_be() -> None:
    shapes = [(3, 40, 60)] * 10
    layout = grid_layout(4, 40, 60, 2, max_pixels=1 << 30)
    pixels = layout.width * layout.height
    check_grid(shapes, 4, drop_last=False, columns=2, max_pixels=pixels)
    with pytest.raises(LimitExceeded) as info:
        check_grid(shapes, 4, drop_last=False, columns=2, max_pixels=pixels - 1)
    assert info.value.limit == "max_png_pixels"
    assert info.value.details["requested"] == pixels


def test_the_grid_waits_for_the_batch_when_its_size_is_not_known() -> None:
    tiny = 1  # any grid is over it
    check_grid([(3, 4, 4), (3, 5, 5)], 2, drop_last=False, columns=2, max_pixels=tiny)
    check_grid([(3, 4, 4)], 2, drop_last=True, columns=2, max_pixels=tiny)
    with pytest.raises(LimitExceeded):
        check_grid([(3, 4, 4)], 2, drop_last=False, columns=2, max_pixels=tiny)


def test_the_grid_and_the_batches_are_charged_before_anything_runs() -> None:
    shapes = [(3, 40, 60)] * 10
    spent = timed_budget()
    check_grid(shapes, 4, drop_last=False, columns=2, max_pixels=1 << 30, budget=spent)
    assert spent.objects == 4  # a labelled cell per picture of the first batch
    assert spent.seconds > 0
    # Sizes that are bounds only (an expanding rotation): charged, checked later.
    bounded = timed_budget()
    check_grid(
        [(3, 4, 4), (3, 5, 5)],
        2,
        drop_last=False,
        columns=2,
        max_pixels=1,
        budget=bounded,
        exact=False,
    )
    assert bounded.objects == 2
    listed = timed_budget()
    charge_batches(shapes, 4, 3, shuffle=True, budget=listed)
    assert listed.objects == 10 * 2 + 2 * 4 + 3 * 3
    # The first batch stacked is a tensor of its own, as large as its pictures.
    pictures = [torch.rand(shape, dtype=torch.float64) for shape in shapes]
    stacked = next(iter(DataLoader(pictures, batch_size=4)))
    assert listed.elements == stacked.numel()
    with pytest.raises(LimitExceeded) as info:
        charge_batches(
            [(1, 8, 8)] * 1000, 16, 10, shuffle=False, budget=timed_budget(max_objects=1000)
        )
    assert info.value.code == "objects_limit"
