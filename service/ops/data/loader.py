"""``POST /data/loader`` (tutorial chapter 7.1): a table as a ``TensorDataset`` of float32
features and float32 (regression) or int64 (classification) targets, charged to the budget,
then batched by a seeded ``DataLoader``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from schemas.datasets import Task
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.labels import class_targets
from service.ops.data.table import Table
from service.ops.regression.linear import regression_targets

SAMPLE_OVERHEAD_FLOPS = 1e4
"""Charged per sample the loader fetches: TensorDataset and the collate work sample by
sample in Python (microseconds each), which the element count alone would not bound."""


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


def loader_tensors(table: Table, task: Task) -> LoaderTensors:
    """The table as the loader's dtypes: x float32, y float32 (regression) or int64 class
    indices. Values beyond float32's range are a 422 ``values_too_large``."""
    x = table.x.to(torch.float32)
    y = None
    classes = None
    if table.has_targets:
        if task == "regression":
            y = regression_targets(table).to(torch.float32)
        else:
            y, classes = class_targets(table)
    for tensor, what in ((x, "x"), (y, "y")):
        if tensor is not None and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise InvalidInput(
                f"{what} holds values beyond float32's range (±3.4e38), the loader's dtype",
                code=ErrorCode.VALUES_TOO_LARGE,
            )
    return LoaderTensors(x, y, classes)


def charge_loader(
    tensors: LoaderTensors, budget: Budget, *, batch_size: int, max_batches: int, include_data: bool
) -> None:
    """Charge the dataset's tensors, the listed batches' data when returned, and the
    per-sample work of fetching them."""
    budget.charge_tensor(tensors.x.numel(), "x (float32)")
    if tensors.y is not None:
        budget.charge_tensor(tensors.y.numel(), "y")
    n, d = tensors.x.shape
    listed = min(n, max_batches * batch_size)
    if include_data:
        budget.charge_tensor(listed * (d + 1), "the listed batches' data")
    budget.charge_flops(listed * SAMPLE_OVERHEAD_FLOPS, f"fetching {listed:,} samples")


def tensor_dataset(tensors: LoaderTensors) -> TensorDataset:
    """``TensorDataset(x, y, indices)``: the sample indices travel with the batches, so that
    the listed data can name them."""
    parts = [tensors.x] if tensors.y is None else [tensors.x, tensors.y]
    return TensorDataset(*parts, torch.arange(tensors.x.shape[0]))


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
    are in all. Shuffling draws from a generator seeded with ``seed``."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=make_generator(seed),
    )
    has_y = len(dataset.tensors) == 3
    batches = []
    for index, batch in enumerate(loader):
        if index >= max_batches:
            break
        deadline.check()
        x, indices = batch[0], batch[-1]
        y = batch[1] if has_y else None
        entry: dict[str, Any] = {
            "index": index,
            "x_shape": list(x.shape),
            "y_shape": None if y is None else list(y.shape),
        }
        if include_data:
            entry.update({"x": x, "y": y, "indices": indices.tolist()})
        batches.append(entry)
    return batches, len(loader)
