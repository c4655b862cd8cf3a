"""A table from x and y wire tensors: float64 kept, columns named, the form of each tensor
checked before any is decoded."""

from __future__ import annotations

import base64
import time

import pytest
import torch

from service.errors import InvalidInput, LimitExceeded
from service.ops.data.wire import table_from_tensors
from tests.unit.ops.data.helpers import budget

BIG = 1 << 30


def test_tensors_keep_float64_precision_and_name_columns() -> None:
    table = table_from_tensors([[0.1, 1.0], [0.2, 2.0]], [0.3, 0.7], max_elements=BIG)
    assert table.x.dtype == torch.float64 and table.x[0, 0].item() == 0.1
    assert table.y is not None and table.y.dtype == torch.float64 and table.y[0].item() == 0.3
    assert table.feature_names == ("x0", "x1") and table.target_names == ("y",)


def test_one_feature_as_a_list_and_string_labels() -> None:
    table = table_from_tensors([1, 2, 3], ["a", "b", "a"], max_elements=BIG)
    assert table.x.shape == (3, 1)
    assert table.labels == ("a", "b", "a") and table.y is None


def test_integer_labels_stay_integers() -> None:
    table = table_from_tensors([[1.0], [2.0]], [0, 1], max_elements=BIG)
    assert table.y is not None and table.y.dtype == torch.int64


@pytest.mark.parametrize(
    ("x", "y", "code"),
    [
        ([[1.0], [2.0]], [1.0, 2.0, 3.0], "length_mismatch"),
        ([[1.0], [2.0]], ["a"], "length_mismatch"),
        ([[[1.0]]], [1.0], "shape_mismatch"),
        (5.0, [1.0], "shape_mismatch"),
        ([[1.0], [2.0]], 3.0, "shape_mismatch"),
        ([[1.0], [2.0]], True, "shape_mismatch"),
        ({"shape": [10**6, 10**6], "b64": ""}, {"nope": 1}, "invalid_tensor"),
        ({"data": [1.0], "b64": ""}, [1.0], "invalid_tensor"),
        ({"shape": [10**6, 10**6], "b64": None, "dtype": "float64"}, [1.0], "invalid_base64"),
        ([[1.0]], {"shape": [10**6, 10**6], "data": None}, "invalid_data"),
        ({"shape": [10**6, 10**6], "data": [1.0], "dtype": 5}, [1.0], "invalid_dtype"),
        ([[1.0], ["x"]], [1.0, 2.0], "invalid_data"),
    ],
)
def test_tensor_refusals(x: object, y: object, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        table_from_tensors(x, y, max_elements=BIG)
    assert info.value.code == code


# --- what is made per column is charged first ------------------------------------------------


def test_no_samples_beside_a_huge_feature_count_is_refused_before_any_name() -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as info:
        table_from_tensors(
            {"b64": "", "shape": [0, 1 << 25], "dtype": "float32"}, None, max_elements=1 << 25
        )
    assert info.value.code == "no_samples"
    with pytest.raises(InvalidInput) as info:
        table_from_tensors(
            {"b64": "", "shape": [1 << 25, 0], "dtype": "float32"}, None, max_elements=1 << 25
        )
    assert info.value.code == "no_features"
    assert time.perf_counter() - start < 0.5


def test_names_are_charged_before_they_are_made() -> None:
    x = {"b64": base64.b64encode(bytes(4 * 5000)).decode(), "shape": [1, 5000], "dtype": "float32"}
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        table_from_tensors(x, None, max_elements=BIG, budget=budget(max_objects=4999))
    assert info.value.code == "objects_limit"
    assert info.value.details["requested"] == 5000
    assert time.perf_counter() - start < 0.5
    spent = budget(max_objects=5000)
    table = table_from_tensors(x, None, max_elements=BIG, budget=spent)
    assert len(table.feature_names) == 5000 and spent.objects == 5000
    several = budget()
    table = table_from_tensors(
        [[1.0], [2.0]], [[1.0, 2.0, 3.0]] * 2, max_elements=BIG, budget=several
    )
    assert table.target_names == ("y0", "y1", "y2") and several.objects == 1 + 3
    labels = budget()
    table_from_tensors([1.0, 2.0, 3.0], ["a", "b", "a"], max_elements=BIG, budget=labels)
    assert labels.objects == 1 + 3


def test_targets_without_columns_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        table_from_tensors(
            [[1.0], [2.0]], {"b64": "", "shape": [2, 0], "dtype": "float64"}, max_elements=BIG
        )
    assert info.value.code == "shape_mismatch"
