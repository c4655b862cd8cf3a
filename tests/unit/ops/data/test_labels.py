"""Class labels as indices: strings sorted, integers ranked, whole floats as integers."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
import torch

from service.errors import InvalidInput, LimitExceeded
from service.ops.data.labels import class_targets, encode_labels
from service.ops.data.wire import table_from_tensors
from tests.unit.ops.data.helpers import budget

BIG = 1 << 30


@pytest.mark.parametrize(
    ("y", "classes", "indices"),
    [
        (["b", "a", "b"], ["a", "b"], [1, 0, 1]),
        ([3, -1, 3], [-1, 3], [1, 0, 1]),
        ([1.0, 0.0, 1.0], [0, 1], [1, 0, 1]),
        ([True, False, True], [0, 1], [1, 0, 1]),
    ],
)
def test_encode_labels(y: list[object], classes: list[object], indices: list[int]) -> None:
    encoded = encode_labels(table_from_tensors([1.0, 2.0, 3.0], y, max_elements=BIG))
    assert encoded.classes == classes
    assert encoded.indices.tolist() == indices


def test_labels_must_be_whole_numbers() -> None:
    with pytest.raises(InvalidInput) as info:
        encode_labels(table_from_tensors([1.0, 2.0], [0.5, 1.0], max_elements=BIG))
    assert info.value.code == "labels_not_integers"


@pytest.mark.parametrize(
    ("y", "expected", "classes"),
    [
        (["b", "a", "b"], [1, 0, 1], ["a", "b"]),
        ([3, -1, 3], [3, -1, 3], None),
        ([2.0, 0.0, 7.0], [2, 0, 7], None),
        ([True, False, True], [1, 0, 1], None),
    ],
)
def test_class_targets_keep_integers_and_index_strings(
    y: list[object], expected: list[int], classes: list[str] | None
) -> None:
    targets, found = class_targets(table_from_tensors([1.0, 2.0, 3.0], y, max_elements=BIG))
    assert targets.dtype == torch.int64
    assert targets.tolist() == expected
    assert found == classes


@pytest.mark.parametrize("y", [[0.5, 1.0], [2.0**63, 0.0]])
def test_class_targets_must_be_int64_whole_numbers(y: list[float]) -> None:
    with pytest.raises(InvalidInput) as info:
        class_targets(table_from_tensors([1.0, 2.0], y, max_elements=BIG))
    assert info.value.code == "labels_not_integers"


def test_classes_are_counted_before_they_are_listed() -> None:
    many = table_from_tensors(
        {"b64": base64.b64encode(np.arange(1 << 20, dtype=np.float64).tobytes()).decode(),
         "shape": [1 << 20], "dtype": "float64"},
        {"b64": base64.b64encode(np.arange(1 << 20, dtype=np.int64).tobytes()).decode(),
         "shape": [1 << 20], "dtype": "int64"},
        max_elements=BIG,
    )  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        encode_labels(many, max_classes=1000)
    assert info.value.code == "classes_limit" and info.value.details["requested"] == 1 << 20
    assert time.perf_counter() - start < 0.5
    spent = budget()
    encoded = encode_labels(
        table_from_tensors([1.0, 2.0, 3.0], ["b", "a", "b"], max_elements=BIG), budget=spent
    )
    assert encoded.classes == ["a", "b"]
    assert spent.objects == 3 + 2  # each label looked up, each class listed
    with pytest.raises(LimitExceeded) as info:
        encode_labels(table_from_tensors([1.0, 2.0], ["a", "b"], max_elements=BIG), max_classes=1)
    assert info.value.code == "classes_limit"
