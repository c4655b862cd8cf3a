"""The dataset registry, user tensors, CSV reading, column selection and label encoding."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import datasets as sk

from service.errors import InvalidInput, LimitExceeded
from service.ops.data.datasets import (
    DATASETS,
    EXAM_HOURS,
    EXAM_SCORES,
    Table,
    check_values,
    describe_datasets,
    encode_labels,
    load_dataset,
    read_csv,
    select,
    table_from_tensors,
)

TUTORIAL = Path(__file__).resolve().parents[3] / "shared" / "seed" / "pytorch-tutorial.txt"
SKLEARN = ["iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud"]
BIG = 1 << 30


def _csv(text: str, **options: Any) -> Table:
    return read_csv(text.encode(), max_elements=options.pop("max_elements", BIG), **options)


# --- built-in datasets -----------------------------------------------------------------------


def test_the_registry_lists_the_contracts_datasets() -> None:
    assert list(DATASETS) == ["exam", *SKLEARN, "sample_images"]


@pytest.mark.skipif(not TUTORIAL.exists(), reason="the tutorial text is not beside the repo")
def test_exam_is_the_tutorials_data() -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    block = text[text.index("examDict") : text.index("examDf")]
    hours_text, scores_text = re.findall(r"\[([^\]]*)\]", block)[:2]
    assert tuple(float(v) for v in hours_text.split(",")) == EXAM_HOURS
    assert tuple(int(v) for v in scores_text.split(",")) == EXAM_SCORES


def test_exam_table() -> None:
    table = load_dataset("exam")
    assert table.x.shape == (20, 1) and table.x.dtype == torch.float64
    assert table.x[:, 0].tolist() == list(EXAM_HOURS)
    assert table.y is not None and table.y.tolist() == [float(s) for s in EXAM_SCORES]
    assert table.feature_names == ("hours",) and table.target_names == ("score",)


@pytest.mark.parametrize("name", SKLEARN)
def test_sklearn_datasets_match_their_loaders(name: str) -> None:
    bunch = getattr(sk, f"load_{name}")()
    table = load_dataset(name)
    assert table is load_dataset(name)  # loaded once
    np.testing.assert_array_equal(table.x.numpy(), bunch.data)
    assert table.y is not None
    np.testing.assert_array_equal(table.y.numpy(), bunch.target)
    assert list(table.feature_names) == list(bunch.feature_names)
    expected_dtype = torch.int64 if table.task == "classification" else torch.float64
    assert table.y.dtype == expected_dtype


def test_describe_datasets() -> None:
    described = {d["name"]: d for d in describe_datasets()}
    assert set(described) == set(DATASETS)
    iris = described["iris"]
    assert (iris["n_samples"], iris["n_features"], iris["task"]) == (150, 4, "classification")
    assert iris["classes"] == [0, 1, 2]
    assert iris["class_names"] == list(sk.load_iris().target_names)
    assert described["linnerud"]["target_names"] == ["Weight", "Waist", "Pulse"]
    assert described["digits"]["image_shape"] == [8, 8]
    images = sk.load_sample_images().images
    assert described["sample_images"]["n_samples"] == len(images)
    assert described["sample_images"]["image_shape"] == list(images[0].shape)
    assert "Boston" in described["diabetes"]["description"]


@pytest.mark.parametrize(
    ("name", "code"), [("nope", "unknown_dataset"), ("sample_images", "image_dataset")]
)
def test_load_dataset_refusals(name: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_dataset(name)
    assert info.value.code == code


# --- tensors ---------------------------------------------------------------------------------


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


# --- CSV -------------------------------------------------------------------------------------


def test_csv_target_defaults_to_the_last_column() -> None:
    table = _csv("a,b,score\n1,2,3\n4,5,6\n")
    assert table.feature_names == ("a", "b") and table.target_names == ("score",)
    assert table.x.tolist() == [[1.0, 2.0], [4.0, 5.0]]
    assert table.y.tolist() == [3.0, 6.0]


def test_csv_named_target_quotes_bom_and_blank_lines() -> None:
    table = _csv('\ufeff"label",x1,"x 2"\r\n1,2,3\r\n\r\n4, 5 ,6\r\n', target="label")
    assert table.feature_names == ("x1", "x 2")
    assert table.x.tolist() == [[2.0, 3.0], [5.0, 6.0]]
    assert table.y.tolist() == [1.0, 4.0]


def test_csv_text_labels_only_where_allowed() -> None:
    text = "h,passed\n1,no\n2,yes\n"
    table = _csv(text, text_target=True)
    assert table.labels == ("no", "yes") and table.y is None
    with pytest.raises(InvalidInput) as info:
        _csv(text)
    assert info.value.code == "csv_not_numeric"
    assert info.value.details["column"] == "passed"


def test_csv_names_the_first_bad_cell_in_reading_order() -> None:
    with pytest.raises(InvalidInput) as info:
        _csv("a,b,c\n1,2,3\n4,x,6\ny,8,z\n")
    assert info.value.code == "csv_not_numeric"
    assert info.value.details == {"line": 3, "row": 2, "column": "b", "value": "x"}
    assert "line 3" in info.value.message and "'b'" in info.value.message


@pytest.mark.parametrize("cell", ["nan", "inf", "", "1,5"])
def test_csv_non_finite_and_empty_cells(cell: str) -> None:
    text = f'a,b\n1,2\n3,"{cell}"\n'
    with pytest.raises(InvalidInput) as info:
        _csv(text)
    assert info.value.code == "csv_not_numeric"
    assert info.value.details["row"] == 2


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_csv"),
        ("\n\n", "empty_csv"),
        ("a,b\n", "empty_csv"),
        ("1,2\n3,4\n", "csv_no_header"),
        ("a,,c\n1,2,3\n", "csv_bad_header"),
        ("a,a\n1,2\n", "csv_bad_header"),
        ("a,b\n1,2\n3\n", "csv_ragged"),
        ("a\n1\n", "csv_no_features"),
        ('a,b\n1,"2\n', "csv_malformed"),
    ],
)
def test_csv_refusals(text: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        _csv(text)
    assert info.value.code == code


def test_csv_unknown_target_and_non_utf8() -> None:
    with pytest.raises(InvalidInput) as info:
        _csv("a,b\n1,2\n", target="c")
    assert info.value.code == "unknown_column"
    with pytest.raises(InvalidInput) as info:
        read_csv(b"a,b\n\xff,2\n", max_elements=BIG)
    assert info.value.code == "csv_not_text"


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({"max_rows": 2}, "max_csv_rows"),
        ({"max_columns": 2}, "max_csv_columns"),
        ({"max_elements": 8}, "max_elements"),
    ],
)
def test_csv_limits_are_checked_while_reading(options: dict[str, int], limit: str) -> None:
    text = "a,b,c\n" + "1,2,3\n" * 3 + "not,even,read\n"
    with pytest.raises(LimitExceeded) as info:
        _csv(text, **options)
    assert info.value.limit == limit
    assert info.value.status_code == 413


# --- columns and labels ----------------------------------------------------------------------


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
