"""The /data/loader's work: the task and dtypes of a table, its charges, and batches as
TensorDataset and DataLoader give them."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from service.errors import InvalidInput, LimitExceeded
from service.limits import Deadline
from service.ops.data.datasets import load_dataset
from service.ops.data.loader import (
    SAMPLE_OVERHEAD_FLOPS,
    charge_description,
    charge_loader,
    load_batches,
    loader_task,
    loader_tensors,
    tensor_dataset,
)
from service.ops.data.table import Table
from service.ops.data.wire import table_from_tensors
from tests.unit.ops.data.helpers import BIG, budget


def _table(y: Any) -> Any:
    return table_from_tensors([[1.0], [2.0], [3.0]], y, max_elements=BIG)


@pytest.mark.parametrize(
    ("requested", "name_or_y", "task"),
    [
        (None, "iris", "classification"),
        (None, "diabetes", "regression"),
        ("regression", "iris", "regression"),
        (None, ["a", "b", "a"], "classification"),
        (None, [0, 1, 1], "classification"),
        (None, [0.5, 1.0, 2.0], "regression"),
        (None, None, "regression"),
        ("classification", [1.0, 3.0, 1.0], "classification"),
    ],
)
def test_the_task(requested: Any, name_or_y: Any, task: str) -> None:
    table = load_dataset(name_or_y) if isinstance(name_or_y, str) else _table(name_or_y)
    assert loader_task(requested, table) == task


def test_the_loaders_dtypes() -> None:
    iris = load_dataset("iris")
    tensors = loader_tensors(iris, "classification")
    torch.testing.assert_close(tensors.x, iris.x.to(torch.float32))
    assert tensors.y is not None and tensors.y.dtype == torch.int64
    assert tensors.classes is None
    as_numbers = loader_tensors(iris, "regression")
    assert as_numbers.y is not None and as_numbers.y.dtype == torch.float32
    labels = loader_tensors(_table(["b", "a", "b"]), "classification")
    assert labels.y is not None and labels.y.tolist() == [1, 0, 1]
    assert labels.classes == ["a", "b"]
    assert loader_tensors(_table(None), "regression").y is None


@pytest.mark.parametrize(
    ("x", "y", "task", "code"),
    [
        ([[1e39]], [1.0], "regression", "values_too_large"),
        ([[1.0]], [1e39], "regression", "values_too_large"),
        ([[1.0]], ["a"], "regression", "targets_not_numeric"),
        ([[1.0]], [0.5], "classification", "labels_not_integers"),
    ],
)
def test_refusals(x: Any, y: Any, task: Any, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        loader_tensors(table_from_tensors(x, y, max_elements=BIG), task)
    assert info.value.code == code


def test_the_charges() -> None:
    tensors = loader_tensors(load_dataset("iris"), "classification")
    spent = budget()
    charge_loader(tensors, spent, batch_size=10, max_batches=3, include_data=False)
    assert spent.elements == 150 * 4 + 150
    assert spent.flops == 30 * SAMPLE_OVERHEAD_FLOPS
    with_data = budget()
    charge_loader(tensors, with_data, batch_size=10, max_batches=3, include_data=True)
    assert with_data.elements == spent.elements + 30 * (4 + 1)
    with pytest.raises(LimitExceeded):
        charge_loader(
            tensors,
            budget(max_total_elements=700),
            batch_size=10,
            max_batches=3,
            include_data=False,
        )


@pytest.mark.parametrize(
    ("shuffle", "drop_last", "seed"), [(False, False, None), (True, False, 7), (True, True, 8)]
)
def test_batches_are_dataloaders(shuffle: bool, drop_last: bool, seed: int | None) -> None:
    tensors = loader_tensors(load_dataset("wine"), "classification")
    batches, n_batches = load_batches(
        tensor_dataset(tensors),
        batch_size=32,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        max_batches=3,
        include_data=True,
        deadline=Deadline(60.0),
    )
    assert tensors.y is not None
    loader = DataLoader(
        TensorDataset(tensors.x, tensors.y, torch.arange(178)),
        batch_size=32,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(0 if seed is None else seed),
    )
    assert n_batches == len(loader)
    expected = [batch for _, batch in zip(range(3), loader, strict=False)]
    assert [b["index"] for b in batches] == [0, 1, 2]
    for got, (x, y, indices) in zip(batches, expected, strict=True):
        torch.testing.assert_close(got["x"], x)
        torch.testing.assert_close(got["y"], y)
        assert got["indices"] == indices.tolist()
        assert (got["x_shape"], got["y_shape"]) == (list(x.shape), list(y.shape))


def test_batches_without_targets_or_data() -> None:
    tensors = loader_tensors(_table(None), "regression")
    batches, n_batches = load_batches(
        tensor_dataset(tensors),
        batch_size=2,
        shuffle=False,
        drop_last=False,
        seed=None,
        max_batches=10,
        include_data=False,
        deadline=Deadline(60.0),
    )
    assert n_batches == 2
    assert batches == [
        {"index": 0, "x_shape": [2, 1], "y_shape": None},
        {"index": 1, "x_shape": [1, 1], "y_shape": None},
    ]


def test_what_is_listed_one_by_one_is_charged_first() -> None:
    tensors = loader_tensors(load_dataset("iris"), "classification")
    spent = budget()
    charge_loader(tensors, spent, batch_size=10, max_batches=3, include_data=True)
    assert spent.objects == 3 + 30  # three entries, and the indices of 30 samples
    with pytest.raises(LimitExceeded) as info:
        charge_loader(
            tensors, budget(max_objects=32), batch_size=10, max_batches=3, include_data=True
        )
    assert info.value.code == "objects_limit"
    shuffled = budget()
    charge_loader(tensors, shuffled, batch_size=10, max_batches=3, include_data=False, shuffle=True)
    assert shuffled.elements == spent.elements - 30 * (4 + 1) + 150  # the order drawn
    names = budget(max_objects=4 + 1 + 2)
    charge_description(names, 4, 1, 2)
    with pytest.raises(LimitExceeded):
        charge_description(names, 1, 0, 0)


def test_a_batch_of_a_million_samples_is_gathered_at_once() -> None:
    n = 1 << 20
    table = Table(
        name="x",
        x=torch.arange(n, dtype=torch.float64).unsqueeze(1),
        feature_names=("x0",),
        source="tensors",
    )
    tensors = loader_tensors(table, "regression")
    start = time.perf_counter()
    batches, n_batches = load_batches(
        tensor_dataset(tensors),
        batch_size=n,
        shuffle=True,
        drop_last=False,
        seed=5,
        max_batches=1,
        include_data=True,
        deadline=Deadline(60.0),
    )
    assert time.perf_counter() - start < 1.0
    assert n_batches == 1 and batches[0]["x_shape"] == [n, 1]
    order = batches[0]["indices"]
    assert sorted(order[:1000]) != order[:1000]  # shuffled
    torch.testing.assert_close(batches[0]["x"][:, 0], tensors.x[torch.tensor(order), 0])
