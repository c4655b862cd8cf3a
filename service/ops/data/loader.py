"""``POST /data/loader`` (tutorial chapter 7.1): a table as a ``TensorDataset`` of float32
features and float32 (regression) or int64 (classification) targets, charged to the budget,
then batched as a seeded ``DataLoader`` batches it.

The batches are the ``DataLoader``'s, to the bit, but gathered by indexing the dataset's
tensors with each batch's sample indices: ``DataLoader`` fetches and collates sample by
sample in Python (microseconds each), which for a batch of millions of samples is minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from schemas.datasets import Task
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.labels import class_targets
from service.ops.data.table import Table
from service.ops.regression.linear import regression_targets

SAMPLE_OVERHEAD_FLOPS = 1e4
"""Charged per listed sample as FLOPs, a bound of the gathering work per sample."""
RANDPERM_UNITS = 4
"""A shuffle's ``randperm`` of n samples, in elementwise passes over n (a random draw and
a swap per sample)."""


def loader_task(requested: Task | None, table: Table) -> Task:
    """The task the targets are converted for: as requested, else the dataset's, else
    classification for labels and integer targets, regression for the rest."""
    if requested is not None:
        return requested
    if table.task is not None and table.task != "images":
        return table.task
    if table.labels is not None:
        return "classification"
    if table.y is not None and not table.y.is_floating_point():
        return "classification"
    return "regression"


@dataclass(frozen=True)
class LoaderTensors:
    """What the ``TensorDataset`` holds: features, targets (if any) and the classes of
    string labels."""

    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[int] | list[str] | None


def loader_tensors(table: Table, task: Task, budget: Budget | None = None) -> LoaderTensors:
    """The table as the loader's dtypes: x float32, y float32 (regression) or int64 class
    indices. Values beyond float32's range are a 422 ``values_too_large``."""
    x = table.x.to(torch.float32)
    y = None
    classes = None
    if table.has_targets:
        if task == "regression":
            y = regression_targets(table).to(torch.float32)
        else:
            y, classes = class_targets(table, budget)
    for tensor, what in ((x, "x"), (y, "y")):
        if tensor is not None and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise InvalidInput(
                f"{what} holds values beyond float32's range (±3.4e38), the loader's dtype",
                code=ErrorCode.VALUES_TOO_LARGE,
            )
    return LoaderTensors(x, y, classes)


def charge_loader(
    tensors: LoaderTensors,
    budget: Budget,
    *,
    batch_size: int,
    max_batches: int,
    include_data: bool,
    shuffle: bool = False,
) -> None:
    """Charge the dataset's tensors, the order of a shuffle, the listed batches (an entry
    each, their data gathered, and with ``include_data`` their sample indices as numbers),
    before any of it is made."""
    budget.charge_tensor(tensors.x.numel(), "x (float32)")
    if tensors.y is not None:
        budget.charge_tensor(tensors.y.numel(), "y")
    n, d = tensors.x.shape
    if shuffle:
        budget.charge_tensor(n, "the shuffled order of the samples")
        budget.charge_elementwise(n * RANDPERM_UNITS, f"shuffling {n:,} samples")
    listed_batches = min(max_batches, count_batches(n, batch_size, drop_last=False))
    budget.charge_objects(listed_batches, f"{listed_batches:,} listed batches")
    listed = min(n, max_batches * batch_size)
    budget.charge_elementwise(listed * (d + 2), f"gathering {listed:,} samples")
    if include_data:
        budget.charge_tensor(listed * (d + 1), "the listed batches' data")
        budget.charge_objects(listed, f"the indices of {listed:,} listed samples")
    budget.charge_flops(listed * SAMPLE_OVERHEAD_FLOPS, f"fetching {listed:,} samples")


def charge_description(
    budget: Budget, n_features: int, n_targets: int, classes: int | None
) -> None:
    """Charge the names the answer lists: one per feature, target and class."""
    count = n_features + n_targets + (classes or 0)
    budget.charge_objects(count, f"listing {count:,} feature, target and class names")


def count_batches(n: int, batch_size: int, *, drop_last: bool) -> int:
    """``len(DataLoader(...))``: batches of ``n`` samples in one epoch."""
    return n // batch_size if drop_last else -(-n // batch_size)


def tensor_dataset(tensors: LoaderTensors) -> TensorDataset:
    """``TensorDataset(x)`` or ``TensorDataset(x, y)``."""
    parts = [tensors.x] if tensors.y is None else [tensors.x, tensors.y]
    return TensorDataset(*parts)


def sample_order(n: int, *, shuffle: bool, seed: int | None) -> torch.Tensor:
    """The order a ``DataLoader(..., shuffle=shuffle, generator=g)`` takes ``n`` samples in:
    its iterator first draws a base seed from ``g``, then ``RandomSampler`` a ``randperm``."""
    if not shuffle:
        return torch.arange(n)
    generator = make_generator(seed)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(n, generator=generator)


def load_batches(
    dataset: TensorDataset,
    *,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int | None,
    max_batches: int,
    include_data: bool,
    deadline: Deadline,
) -> tuple[list[dict[str, Any]], int]:
    """The first ``max_batches`` batches of ``DataLoader(dataset, ...)`` described (shapes,
    and with ``include_data`` the tensors and sample indices), and how many batches there
    are in all. Shuffling draws from a generator seeded with ``seed``, as the DataLoader's
    generator would."""
    tensors = dataset.tensors
    n = int(tensors[0].shape[0])
    n_batches = count_batches(n, batch_size, drop_last=drop_last)
    order = sample_order(n, shuffle=shuffle, seed=seed)
    batches = []
    for index in range(min(max_batches, n_batches)):
        deadline.check()
        chosen = order[index * batch_size : (index + 1) * batch_size]
        x = tensors[0].index_select(0, chosen)
        y = tensors[1].index_select(0, chosen) if len(tensors) == 2 else None
        entry: dict[str, Any] = {
            "index": index,
            "x_shape": list(x.shape),
            "y_shape": None if y is None else list(y.shape),
        }
        if include_data:
            entry.update({"x": x, "y": y, "indices": chosen.tolist()})
        batches.append(entry)
    return batches, n_batches
