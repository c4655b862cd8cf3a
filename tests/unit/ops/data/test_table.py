"""A table's columns chosen by name, and the values every fit refuses."""

from __future__ import annotations

import pytest
import torch

from service.errors import InvalidInput
from service.ops.data.datasets import load_dataset
from service.ops.data.table import check_values, select
from service.ops.data.wire import table_from_tensors

BIG = 1 << 30


def test_non_finite_values_are_refused() -> None:
    table = table_from_tensors([[1.0], ["NaN"]], [1.0, 2.0], max_elements=BIG)
    with pytest.raises(InvalidInput) as info:
        check_values(table)
    assert info.value.code == "non_finite"
    assert info.value.details == {"tensor": "x", "index": [1, 0]}


@pytest.mark.parametrize(
    ("x", "y", "code"),
    [
        ([[1.0], [2.0]], [1.0, "-Infinity"], "non_finite"),
        ([[1.0], [1e101]], [1.0, 2.0], "values_too_large"),
        ([[1.0], [2.0]], [-1e101, 2.0], "values_too_large"),
        ([], [], "no_samples"),
        ([[], []], [1.0, 2.0], "no_features"),
    ],
)
def test_values_the_fits_refuse(x: object, y: object, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_values(table_from_tensors(x, y, max_elements=BIG))
    assert info.value.code == code


def test_values_at_the_bound_pass() -> None:
    check_values(table_from_tensors([[1e100], [-1e100]], [1e100, 0.0], max_elements=BIG))


def test_select_features_in_the_given_order() -> None:
    iris = load_dataset("iris")
    chosen = select(iris, ["petal width (cm)", "sepal length (cm)"], None)
    assert chosen.feature_names == ("petal width (cm)", "sepal length (cm)")
    torch.testing.assert_close(chosen.x, iris.x[:, [3, 0]])


def test_select_one_of_several_targets() -> None:
    linnerud = load_dataset("linnerud")
    chosen = select(linnerud, None, "Pulse")
    assert chosen.target_names == ("Pulse",)
    assert linnerud.y is not None and chosen.y is not None
    torch.testing.assert_close(chosen.y, linnerud.y[:, 2])


@pytest.mark.parametrize(
    ("features", "target", "code"),
    [
        (["nope"], None, "unknown_feature"),
        (["sepal length (cm)", "sepal length (cm)"], None, "duplicate_feature"),
        (None, "nope", "unknown_target"),
    ],
)
def test_select_refusals(features: list[str] | None, target: str | None, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        select(load_dataset("iris"), features, target)
    assert info.value.code == code


def test_target_does_not_apply_to_tensors() -> None:
    table = table_from_tensors([[1.0]], [1.0], max_elements=BIG)
    with pytest.raises(InvalidInput) as info:
        select(table, None, "y")
    assert info.value.code == "unexpected_target"
