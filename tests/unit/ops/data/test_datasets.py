"""The built-in datasets: the registry, the tutorial's exam data, scikit-learn's bundled
sets loaded as they load, and what GET /datasets lists."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import datasets as sk

from service.errors import InvalidInput
from service.ops.data.datasets import (
    DATASETS,
    EXAM_HOURS,
    EXAM_SCORES,
    describe_datasets,
    load_dataset,
)

TUTORIAL = Path(__file__).resolve().parents[5] / "shared" / "seed" / "pytorch-tutorial.txt"
SKLEARN = ["iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud"]


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
