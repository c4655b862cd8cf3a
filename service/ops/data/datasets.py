"""The built-in datasets: what ``GET /datasets`` lists, and the tables the fits and
``/data/loader`` read by name.

They ship with the installed packages (``exam`` is written out below; the others are
scikit-learn's bundled files, read locally, never downloaded) and are loaded once per
process.

The names the fits import with them (the table, user tensors, labels) are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from schemas.datasets import DatasetTask
from service.errors import ErrorCode, InvalidInput
from service.ops.data.image_sets import DIGITS_SIDE, sample_photos
from service.ops.data.labels import EncodedLabels, encode_labels
from service.ops.data.table import Table
from service.ops.data.wire import check_wire_form, float64_wire, table_from_tensors

__all__ = [
    "DATASETS",
    "EXAM_HOURS",
    "EXAM_SCORES",
    "Dataset",
    "EncodedLabels",
    "Table",
    "check_wire_form",
    "describe_datasets",
    "encode_labels",
    "float64_wire",
    "is_loaded",
    "load_dataset",
    "table_from_tensors",
]

# The tutorial's chapter 2: study hours and exam scores of 20 students.
EXAM_HOURS = (
    0.50, 0.75, 1.00, 1.25, 1.50, 1.75, 1.75, 2.00, 2.25, 2.50,
    2.75, 3.00, 3.25, 3.50, 4.00, 4.25, 4.50, 4.75, 5.00, 5.50,
)  # fmt: skip
EXAM_SCORES = (10, 22, 13, 43, 20, 22, 33, 50, 62, 48, 55, 75, 62, 73, 81, 76, 64, 82, 90, 93)


@dataclass(frozen=True)
class Dataset:
    """A built-in dataset: what ``GET /datasets`` lists and how to load it."""

    name: str
    task: DatasetTask
    description: str
    source: str
    load: Callable[[], Any]


def _exam() -> Table:
    return Table(
        name="exam",
        x=torch.tensor(EXAM_HOURS, dtype=torch.float64).unsqueeze(1),
        feature_names=("hours",),
        y=torch.tensor(EXAM_SCORES, dtype=torch.float64),
        target_names=("score",),
        task="regression",
    )


def _sklearn(name: str, target: str, task: DatasetTask) -> Callable[[], Table]:
    def load() -> Table:
        from sklearn import datasets  # noqa: PLC0415 (slow import, needed on first use only)

        bunch = getattr(datasets, f"load_{name}")()
        x = torch.from_numpy(np.ascontiguousarray(bunch.data, dtype=np.float64))
        y = torch.from_numpy(np.ascontiguousarray(bunch.target))
        class_names = None
        if task == "classification":
            y = y.to(torch.int64)
            class_names = tuple(str(n) for n in bunch.target_names)
        else:
            y = y.to(torch.float64)
        targets = tuple(str(n) for n in bunch.target_names) if y.ndim == 2 else (target,)
        return Table(
            name=name,
            x=x,
            feature_names=tuple(str(n) for n in bunch.feature_names),
            y=y,
            target_names=targets,
            task=task,
            class_names=class_names,
        )

    return load


def _sample_images() -> list[np.ndarray]:
    return [array for _, array in sample_photos()]


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            "exam",
            "regression",
            "The tutorial's chapter 2: hours studied and exam score of 20 students (written "
            "out in torchlab's code).",
            "torchlab (the tutorial's examDict)",
            _exam,
        ),
        Dataset(
            "iris",
            "classification",
            "Fisher's iris flowers: 4 measurements of 150 flowers of 3 species.",
            "sklearn.datasets.load_iris",
            _sklearn("iris", "species", "classification"),
        ),
        Dataset(
            "diabetes",
            "regression",
            "Disease progression one year after baseline of 442 diabetes patients, from 10 "
            "baseline variables (mean-centred and scaled, as scikit-learn ships them). Stands "
            "in for the tutorial's Boston housing, which scikit-learn removed in version 1.2.",
            "sklearn.datasets.load_diabetes",
            _sklearn("diabetes", "progression", "regression"),
        ),
        Dataset(
            "wine",
            "classification",
            "Chemical analysis of 178 wines from 3 cultivars: 13 measurements each.",
            "sklearn.datasets.load_wine",
            _sklearn("wine", "cultivar", "classification"),
        ),
        Dataset(
            "breast_cancer",
            "classification",
            "Wisconsin diagnostic breast cancer: 30 features of 569 cell nuclei images, "
            "malignant (0) or benign (1).",
            "sklearn.datasets.load_breast_cancer",
            _sklearn("breast_cancer", "diagnosis", "classification"),
        ),
        Dataset(
            "digits",
            "classification",
            "1797 handwritten digits, 8×8 pixels of 0–16 each, flattened to 64 features.",
            "sklearn.datasets.load_digits",
            _sklearn("digits", "digit", "classification"),
        ),
        Dataset(
            "linnerud",
            "regression",
            "20 middle-aged men: 3 exercises (chins, situps, jumps) and 3 physiological "
            "measurements (weight, waist, pulse) as targets.",
            "sklearn.datasets.load_linnerud",
            _sklearn("linnerud", "", "regression"),
        ),
        Dataset(
            "sample_images",
            "images",
            "scikit-learn's two sample photographs (china.jpg, flower.jpg), 427×640 RGB; for "
            "POST /data/images.",
            "sklearn.datasets.load_sample_images",
            _sample_images,
        ),
    )
}

_IMAGE_SHAPES: dict[str, list[int]] = {"digits": [DIGITS_SIDE, DIGITS_SIDE]}
"""The picture each sample of a tabular dataset flattens, where it is one."""


_LOADED: dict[str, Table] = {}


def is_loaded(name: str) -> bool:
    """Whether the dataset is in memory already (the first load imports scikit-learn)."""
    return name in _LOADED


def load_dataset(name: str) -> Table:
    """A built-in tabular dataset by name (loaded once per process).

    Raises :class:`InvalidInput` for an unknown name or an image dataset.
    """
    if name in _LOADED:
        return _LOADED[name]
    dataset = DATASETS.get(name)
    if dataset is None:
        raise InvalidInput(
            f"unknown dataset {name!r}; built-in: {', '.join(DATASETS)}",
            details={"dataset": name, "available": list(DATASETS)},
            code=ErrorCode.UNKNOWN_DATASET,
        )
    if dataset.task == "images":
        raise InvalidInput(
            f"{name!r} is a dataset of pictures, for POST /data/images",
            code=ErrorCode.IMAGE_DATASET,
        )
    table: Table = dataset.load()
    _LOADED[name] = table
    return table


@functools.cache
def describe_datasets() -> list[dict[str, Any]]:
    """What ``GET /datasets`` lists: every dataset with its counts and names."""
    described = []
    for dataset in DATASETS.values():
        if dataset.task == "images":
            images = dataset.load()
            described.append(
                {
                    "name": dataset.name,
                    "task": dataset.task,
                    "n_samples": len(images),
                    "n_features": None,
                    "feature_names": [],
                    "target_names": [],
                    "classes": None,
                    "class_names": None,
                    "image_shape": list(images[0].shape),
                    "description": dataset.description,
                    "source": dataset.source,
                }
            )
            continue
        table = load_dataset(dataset.name)
        classes = None
        if table.task == "classification" and table.y is not None:
            classes = [int(v) for v in torch.unique(table.y).tolist()]
        described.append(
            {
                "name": dataset.name,
                "task": dataset.task,
                "n_samples": table.n_samples,
                "n_features": table.n_features,
                "feature_names": list(table.feature_names),
                "target_names": list(table.target_names),
                "classes": classes,
                "class_names": None if table.class_names is None else list(table.class_names),
                "image_shape": _IMAGE_SHAPES.get(dataset.name),
                "description": dataset.description,
                "source": dataset.source,
            }
        )
    return described
