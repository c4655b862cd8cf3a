"""A table from x and y wire tensors: float64 kept, columns named, the form of each tensor
checked before any is decoded."""

from __future__ import annotations

import pytest
import torch

from service.errors import InvalidInput
from service.ops.data.wire import table_from_tensors

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
