"""Transformed pictures as a ``DataLoader`` would batch them: the first batch, per-channel
statistics over the whole set, and the PNG grid's size checked before any work."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget
from service.memory import allocation_failed
from service.ops.context import make_generator
from service.ops.data.transforms import Shape
from service.ops.render.images import charge_grid, grid_layout

CPU = torch.device("cpu")
STATS_UNITS = 8
"""Elementwise passes of the statistics over every pixel: a float64 copy of a block of
pictures, concatenated, its mean, the deviations, their squares and their sum."""

STATS_BLOCK_ELEMENTS = 1 << 22
"""Pixels the statistics take at once (as float64: 32 MiB, and as much for the block):
the pictures' statistics are combined block by block, never over a copy of the whole set."""


def channel_stats(
    tensors: Sequence[torch.Tensor], device: torch.device | None = None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (``torch.std``: unbiased) over every pixel of
    every picture, on the values as they are, in float64, on ``device``. Pictures must agree
    in channels (422 ``channel_mismatch``). Blocks of pictures are reduced one at a time and
    their moments combined (Chan et al.'s pairwise update: stable as a two-pass variance)."""
    channels = {int(t.shape[0]) for t in tensors}
    if len(channels) != 1:
        raise InvalidInput(
            f"the pictures have different channel counts {sorted(channels)} after the "
            "transforms; add Grayscale, or choose one mode",
            code=ErrorCode.CHANNEL_MISMATCH,
            details={"channels": sorted(channels)},
        )
    (count,) = channels
    where = device or CPU
    total = 0
    mean = torch.zeros(count, dtype=torch.float64, device=where)
    squares = torch.zeros(count, dtype=torch.float64, device=where)  # Σ (x − mean)²
    for block in _blocks(tensors):
        flat = torch.cat(
            [t.to(device=where, dtype=torch.float64).reshape(count, -1) for t in block], dim=1
        )
        n = flat.shape[1]
        if n == 0:
            continue
        block_mean = flat.mean(dim=1)
        block_squares = (flat - block_mean[:, None]).square_().sum(dim=1)
        delta = block_mean - mean
        mean += delta * (n / (total + n))
        squares += block_squares + delta.square() * (total * n / (total + n))
        total += n
    std = (squares / (total - 1)).sqrt() if total > 1 else torch.zeros_like(mean)
    return mean.cpu().tolist(), std.cpu().tolist()


def _blocks(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive pictures, at least :data:`STATS_BLOCK_ELEMENTS` pixels a block (but the
    last), or one picture alone when it is larger."""
    block: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        block.append(tensor)
        size += tensor.numel()
        if size >= STATS_BLOCK_ELEMENTS:
            yield block
            block, size = [], 0
    if block:
        yield block


@dataclass(frozen=True)
class Batch:
    """The first batch of a ``DataLoader`` and how many there are."""

    x: torch.Tensor
    y: torch.Tensor
    n_batches: int


def first_batch(
    tensors: Sequence[torch.Tensor],
    targets: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int | None = None,
) -> Batch:
    """``next(iter(DataLoader(dataset, batch_size, shuffle, drop_last, generator)))``, the
    sampler seeded by ``seed``. No batch at all is a 422 ``empty_batch``; pictures of
    different sizes in one batch a 422 ``size_mismatch``."""
    dataset = list(zip(tensors, targets, strict=True))
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=make_generator(seed),
    )
    n_batches = len(loader)
    if n_batches == 0:
        raise InvalidInput(
            f"drop_last with batch_size {batch_size} leaves no batch of {len(dataset)} picture(s)",
            code=ErrorCode.EMPTY_BATCH,
        )
    try:
        x, y = next(iter(loader))
    except RuntimeError as exc:
        if allocation_failed(exc):
            raise
        sizes = sorted({tuple(int(s) for s in t.shape) for t in tensors})[:5]
        raise InvalidInput(
            f"the pictures of the first batch differ in size ({exc}); add a Resize or "
            "CenterCrop transform so that they agree, or use batch_size 1",
            code=ErrorCode.SIZE_MISMATCH,
            details={"shapes": [list(s) for s in sizes]},
        ) from exc
    return Batch(x, y, n_batches)


def class_labels(classes: Sequence[str], targets: torch.Tensor) -> list[str]:
    """The class name of each target (for the grid's labels)."""
    return [classes[int(t)] for t in targets.tolist()]


def check_grid(
    shapes: Sequence[Shape],
    batch_size: int,
    *,
    drop_last: bool,
    columns: int,
    max_pixels: int,
    budget: Budget | None = None,
    exact: bool = True,
) -> None:
    """Refuse (413 ``png_pixels_limit``, over ``max_pixels``) the grid of the first batch
    before any transform runs, when its size is known: every picture predicted to come out
    the same size (``exact``: the sizes are not only bounds), and a first batch to draw.
    Otherwise the grid is checked once the batch is made. Its drawing is charged to
    ``budget`` (from the bounds, never more than ``max_pixels`` of canvas)."""
    distinct = set(shapes)
    if not shapes or (drop_last and len(shapes) < batch_size):
        return
    count = min(batch_size, len(shapes))
    if exact and len(distinct) == 1:
        ((channels, height, width),) = distinct
        layout = grid_layout(count, height, width, columns, max_pixels=max_pixels)
    else:
        channels = max(c for c, _, _ in distinct)
        height = max(h for _, h, _ in distinct)
        width = max(w for _, _, w in distinct)
        layout = grid_layout(count, height, width, columns, max_pixels=1 << 62)
    if budget is not None:
        charge_grid(layout, channels, height, width, budget, max_pixels=max_pixels)


def charge_batches(
    shapes: Sequence[Shape], batch_size: int, n_classes: int, *, shuffle: bool, budget: Budget
) -> None:
    """Charge what follows the transforms: the per-channel statistics over every picture,
    the ``DataLoader``'s dataset of pairs (and a shuffle's order) and its first batch
    stacked, and the answer's one-by-one parts (a target per picture of the batch, three
    entries per class)."""
    n = len(shapes)
    elements = sum(math.prod(shape) for shape in shapes)
    budget.charge_elementwise(elements * STATS_UNITS, f"the statistics of {n:,} pictures")
    first = sorted((math.prod(shape) for shape in shapes), reverse=True)[:batch_size]
    # A tensor of its own beside the pictures (float64 digits resized to 220² in one batch
    # of 1797: 87M elements more).
    budget.charge_tensors(sum(first), "the first batch, stacked")
    budget.charge_elementwise(sum(first), "stacking the first batch")
    count = n * (2 if shuffle else 1) + 2 * min(batch_size, n) + 3 * n_classes
    budget.charge_objects(count, f"the DataLoader of {n:,} pictures and the answer")
