"""Tables of data: the built-in datasets, user tensors and uploaded CSV files.

Every source becomes a :class:`Table`: float64 features on the CPU with column names, and
targets as a tensor or as string labels. The built-in datasets ship with the installed
packages (``exam`` is written out below; the others are scikit-learn's bundled files, read
locally, never downloaded) and are loaded once per process.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from service.codec import decode_tensor
from service.errors import ErrorCode, InvalidInput, LimitExceeded

DatasetTask = Literal["regression", "classification", "images"]

# The tutorial's chapter 2: study hours and exam scores of 20 students.
EXAM_HOURS = (
    0.50, 0.75, 1.00, 1.25, 1.50, 1.75, 1.75, 2.00, 2.25, 2.50,
    2.75, 3.00, 3.25, 3.50, 4.00, 4.25, 4.50, 4.75, 5.00, 5.50,
)  # fmt: skip
EXAM_SCORES = (10, 22, 13, 43, 20, 22, 33, 50, 62, 48, 55, 75, 62, 73, 81, 76, 64, 82, 90, 93)

MAX_CSV_ROWS = 1_000_000
"""Data rows an uploaded CSV may hold (the header not counted)."""
MAX_CSV_COLUMNS = 10_000
"""Columns an uploaded CSV may hold."""


@dataclass(frozen=True)
class Table:
    """Samples in rows: features ``x`` [n, d] (float64, CPU) and optional targets.

    Targets are ``y`` (a tensor, [n] or [n, k]) or ``labels`` (strings, one per sample), or
    neither. Tensors of a cached built-in table are shared: never modify them in place.
    """

    name: str
    x: torch.Tensor
    feature_names: tuple[str, ...]
    source: Literal["dataset", "tensors", "csv"] = "dataset"
    y: torch.Tensor | None = None
    labels: tuple[str, ...] | None = None
    target_names: tuple[str, ...] = ()
    task: DatasetTask | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def has_targets(self) -> bool:
        return self.y is not None or self.labels is not None


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
    from sklearn import datasets  # noqa: PLC0415

    images: list[np.ndarray] = datasets.load_sample_images().images
    return images


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

_IMAGE_SHAPES: dict[str, list[int]] = {"digits": [8, 8]}


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


# --- user tensors ----------------------------------------------------------------------------


def float64_wire(value: object) -> object:
    """``value``, a wire tensor, to decode as float64 unless it names its dtype: JSON decimals
    then keep their precision (the codec would otherwise infer float32, as torch.tensor
    does)."""
    if isinstance(value, list):
        return {"data": value, "dtype": "float64"}
    if (
        isinstance(value, dict)
        and "data" in value
        and "dtype" not in value
        and ("datatype" not in value)
    ):
        return {**value, "dtype": "float64"}
    return value


def _is_text_labels(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


_WIRE_KEYS = frozenset({"data", "b64", "shape", "dtype", "datatype"})


def check_wire_form(value: object, where: str) -> None:
    """Refuse (422) what cannot be a tensor of samples: a bare number or boolean, or an object
    whose keys or value types are wrong. Run on every tensor of a request before any is
    decoded, so a malformed one is reported as such even when another (or its own declared
    shape) is over a limit: the codec checks the element limit as soon as it knows the
    shape, before it looks at the data."""
    if isinstance(value, list):
        return
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{where} must hold one value per sample (a list or a tensor object), not a "
            "single number",
            code=ErrorCode.SHAPE_MISMATCH,
        )
    if set(value) - _WIRE_KEYS or ("data" in value) == ("b64" in value):
        raise InvalidInput(
            f"{where}: a tensor object has 'data' or 'b64', with 'shape' and 'dtype' (or "
            "'datatype')",
            code=ErrorCode.INVALID_TENSOR,
        )
    if "b64" in value and not isinstance(value["b64"], str):
        raise InvalidInput(f"{where}.b64 must be a string", code=ErrorCode.INVALID_BASE64)
    if "data" in value and (value["data"] is None or isinstance(value["data"], str | dict)):
        raise InvalidInput(
            f"{where}.data must be a nested list of numbers (or one number)",
            code=ErrorCode.INVALID_DATA,
        )
    for key in ("dtype", "datatype"):
        if key in value and not isinstance(value[key], str):
            raise InvalidInput(f"{where}.{key} must be a dtype name", code=ErrorCode.INVALID_DTYPE)


def table_from_tensors(x_wire: object, y_wire: object | None, *, max_elements: int) -> Table:
    """A table from the request's ``x`` and ``y`` (wire tensors; ``y`` may be a list of
    string labels). Features are named ``x0``, ``x1``, …; the target ``y``."""
    check_wire_form(x_wire, "x")
    if y_wire is not None:
        check_wire_form(y_wire, "y")
    x = decode_tensor(float64_wire(x_wire), max_elements=max_elements, where="x")
    if x.ndim == 1:
        x = x.unsqueeze(1)
    if x.ndim != 2:
        raise InvalidInput(
            f"x has shape {list(x.shape)}; it must be [n_samples, n_features] or [n_samples]",
            details={"shape": list(x.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    x = x.to(torch.float64)
    names = tuple(f"x{i}" for i in range(x.shape[1]))
    if y_wire is None:
        return Table(name="x", x=x, feature_names=names, source="tensors")
    if _is_text_labels(y_wire):
        assert isinstance(y_wire, list)
        labels = tuple(y_wire)
        _check_lengths(x.shape[0], len(labels))
        return Table(
            name="x",
            x=x,
            feature_names=names,
            source="tensors",
            labels=labels,
            target_names=("y",),
        )
    y = decode_tensor(y_wire, max_elements=max_elements, where="y")
    if y.is_floating_point() and y.dtype != torch.float64 and not _names_dtype(y_wire):
        y = decode_tensor(float64_wire(y_wire), max_elements=max_elements, where="y")
    if y.ndim == 0 or y.ndim > 2:
        raise InvalidInput(
            f"y has shape {list(y.shape)}; it must be [n_samples] or [n_samples, n_targets]",
            details={"shape": list(y.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    _check_lengths(x.shape[0], y.shape[0])
    if y.dtype == torch.bool:
        y = y.to(torch.int64)
    targets = ("y",) if y.ndim == 1 else tuple(f"y{i}" for i in range(y.shape[1]))
    return Table(name="x", x=x, feature_names=names, source="tensors", y=y, target_names=targets)


def _names_dtype(value: object) -> bool:
    return isinstance(value, dict) and ("dtype" in value or "datatype" in value)


def _check_lengths(n_x: int, n_y: int) -> None:
    if n_x != n_y:
        raise InvalidInput(
            f"x has {n_x} samples but y has {n_y}; they must have one target per sample",
            details={"x_samples": n_x, "y_samples": n_y},
            code=ErrorCode.LENGTH_MISMATCH,
        )


# --- CSV -------------------------------------------------------------------------------------


def _csv_error(message: str, code: ErrorCode, **details: object) -> InvalidInput:
    return InvalidInput(message, details=dict(details), code=code)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(
    data: bytes,
    *,
    name: str = "csv",
    target: str | None = None,
    text_target: bool = False,
    max_rows: int = MAX_CSV_ROWS,
    max_columns: int = MAX_CSV_COLUMNS,
    max_elements: int,
) -> Table:
    """A table from CSV bytes (UTF-8, comma-separated, a header row naming the columns).

    ``target`` names the target column (default: the last one); every other column is a
    feature. Every cell must be a finite number, except the target's when ``text_target``
    (class labels: strings are kept as labels if any cell is not a number). Limits on rows,
    columns and cells are checked row by row as the file is read. Raises
    :class:`InvalidInput` naming the first bad cell, or :class:`LimitExceeded`.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _csv_error(
            f"the CSV is not UTF-8 text (byte {exc.start} cannot be decoded)",
            ErrorCode.CSV_NOT_TEXT,
        ) from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []  # the file line of each row, for error messages
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank lines
            if header is None:
                if len(fields) > max_columns:
                    raise LimitExceeded(
                        "max_csv_columns", max_columns, len(fields), "the CSV's header"
                    )
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise _csv_error(
                    f"CSV line {reader.line_num} has {len(fields)} cells, the header has "
                    f"{len(header)}",
                    ErrorCode.CSV_RAGGED,
                    line=reader.line_num,
                    cells=len(fields),
                    columns=len(header),
                )
            if len(rows) >= max_rows:
                raise LimitExceeded("max_csv_rows", max_rows, len(rows) + 1, "the CSV")
            if (len(rows) + 1) * len(header) > max_elements:
                raise LimitExceeded(
                    "max_elements", max_elements, (len(rows) + 1) * len(header), "the CSV's cells"
                )
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise _csv_error(
            f"CSV line {reader.line_num}: {exc}", ErrorCode.CSV_MALFORMED, line=reader.line_num
        ) from exc
    if header is None:
        raise _csv_error(
            "the CSV is empty: it needs a header row and data rows", ErrorCode.EMPTY_CSV
        )
    _check_header(header)
    if not rows:
        raise _csv_error("the CSV has a header but no data rows", ErrorCode.EMPTY_CSV)

    target_name = header[-1] if target is None else target
    if target_name not in header:
        raise _csv_error(
            f"target {target_name!r} is not a column of the CSV; columns: {_names_list(header)}",
            ErrorCode.UNKNOWN_COLUMN,
            target=target_name,
            columns=header[:50],
        )
    if len(header) < 2:
        raise _csv_error(
            "the CSV has one column; it needs feature columns and a target column",
            ErrorCode.CSV_NO_FEATURES,
        )
    target_index = header.index(target_name)
    feature_index = [i for i in range(len(header)) if i != target_index]
    cells = np.array(rows, dtype=np.str_)
    del rows
    labels: tuple[str, ...] | None = None
    target_cells = cells[:, target_index].tolist()
    numeric_index = list(range(len(header)))
    if text_target and not all(_is_number(cell) for cell in target_cells):
        labels = tuple(cell.strip() for cell in target_cells)
        numeric_index = feature_index
    values = _numbers(cells[:, numeric_index], [header[i] for i in numeric_index], lines)
    x = values[:, [numeric_index.index(i) for i in feature_index]]
    y = None if labels is not None else torch.from_numpy(values[:, target_index].copy())
    return Table(
        name=name,
        x=torch.from_numpy(np.ascontiguousarray(x)),
        feature_names=tuple(header[i] for i in feature_index),
        source="csv",
        y=y,
        labels=labels,
        target_names=(target_name,),
    )


def _names_list(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _check_header(header: list[str]) -> None:
    if all(_is_number(cell) for cell in header):
        raise _csv_error(
            "the CSV's first row holds numbers: it needs a header row naming the columns",
            ErrorCode.CSV_NO_HEADER,
            first_row=header[:20],
        )
    for index, cell in enumerate(header):
        if not cell:
            raise _csv_error(
                f"the CSV's header has an empty name in column {index + 1}",
                ErrorCode.CSV_BAD_HEADER,
                column=index + 1,
            )
    seen: set[str] = set()
    for cell in header:
        if cell in seen:
            raise _csv_error(
                f"the CSV's header names column {cell!r} twice",
                ErrorCode.CSV_BAD_HEADER,
                column=cell,
            )
        seen.add(cell)


def _numbers(cells: np.ndarray, names: list[str], lines: list[int]) -> np.ndarray:
    """``cells`` (strings) as float64, or a 422 naming the first cell (in reading order)
    that is not a finite number. ``lines`` are the file lines of the rows."""
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            values = cells.astype(np.float64)
        bad = ~np.isfinite(values)
    except ValueError:
        values = None
        bad = np.array([[not _finite_number(c) for c in row] for row in cells.tolist()])
        bad = bad.reshape(cells.shape)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        cell = str(cells[row, col])
        raise _csv_error(
            f"CSV line {lines[row]} (data row {row + 1}), column {names[col]!r}: "
            f"{cell[:40]!r} is not a finite number (every cell must be a number, except "
            "class labels in the target column of a classification)",
            ErrorCode.CSV_NOT_NUMERIC,
            line=lines[row],
            row=row + 1,
            column=names[col],
            value=cell[:40],
        )
    assert values is not None
    result: np.ndarray = values
    return result


def _finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# --- choosing columns and checking values ----------------------------------------------------


def select(table: Table, features: Sequence[str] | None, target: str | None) -> Table:
    """``table`` with only the named ``features`` (in that order) and the named ``target``
    (one of a multi-target dataset's). Raises :class:`InvalidInput` for unknown names."""
    if target is not None:
        table = _select_target(table, target)
    if features is None:
        return table
    if len(set(features)) != len(features):
        raise InvalidInput("features: a name is given twice", code=ErrorCode.DUPLICATE_FEATURE)
    index = {name: i for i, name in enumerate(table.feature_names)}
    missing = [name for name in features if name not in index]
    if missing:
        raise InvalidInput(
            f"features: {_names_list(missing, 5)} not in the data; its features: "
            f"{_names_list(table.feature_names)}",
            details={"unknown": list(missing[:20]), "available": list(table.feature_names[:100])},
            code=ErrorCode.UNKNOWN_FEATURE,
        )
    columns = torch.tensor([index[name] for name in features], dtype=torch.int64)
    return replace(table, x=table.x.index_select(1, columns), feature_names=tuple(features))


def _select_target(table: Table, target: str) -> Table:
    if table.source == "tensors":
        raise InvalidInput(
            "target names a column of an uploaded CSV or one of a dataset's targets; with "
            "x/y the target is y",
            code=ErrorCode.UNEXPECTED_TARGET,
        )
    if target not in table.target_names:
        raise InvalidInput(
            f"target {target!r} is not a target of {table.name!r}; its targets: "
            f"{_names_list(table.target_names)}",
            details={"target": target, "available": list(table.target_names)},
            code=ErrorCode.UNKNOWN_TARGET,
        )
    if table.y is None or table.y.ndim == 1:
        return table
    position = table.target_names.index(target)
    return replace(table, y=table.y[:, position], target_names=(target,))


MAX_MAGNITUDE = 1e100
"""Largest absolute value of the data: sums of squares of values up to it stay far inside
float64's range, so no statistic of a fit overflows."""


def check_values(table: Table) -> None:
    """Refuse data without samples or features (422 ``no_samples``, ``no_features``), NaN
    and infinities (``non_finite``), and values beyond ±:data:`MAX_MAGNITUDE`
    (``values_too_large``) in the features and numeric targets."""
    if table.n_samples == 0:
        raise InvalidInput("the data has no samples", code=ErrorCode.NO_SAMPLES)
    if table.n_features == 0:
        raise InvalidInput("the data has no features (x has 0 columns)", code=ErrorCode.NO_FEATURES)
    for name, values in (("x", table.x), ("y", table.y)):
        if values is None or not values.is_floating_point():
            continue
        low, high = torch.aminmax(values)  # one pass; NaN propagates
        if float(low) >= -MAX_MAGNITUDE and float(high) <= MAX_MAGNITUDE:
            continue
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            position = [int(i) for i in torch.nonzero(~finite)[0]]
            raise InvalidInput(
                f"{name} holds NaN or infinite values (the first at index {position}); the "
                "data must be finite",
                details={"tensor": name, "index": position},
                code=ErrorCode.NON_FINITE,
            )
        large = values.abs() > MAX_MAGNITUDE
        if bool(large.any()):
            position = [int(i) for i in torch.nonzero(large)[0]]
            raise InvalidInput(
                f"{name} holds values beyond ±{MAX_MAGNITUDE:g} (the first at index "
                f"{position}); rescale the data",
                details={"tensor": name, "index": position, "max_magnitude": MAX_MAGNITUDE},
                code=ErrorCode.VALUES_TOO_LARGE,
            )


@dataclass(frozen=True)
class EncodedLabels:
    """Class labels as indices ``0..C-1`` into ``classes`` (sorted)."""

    indices: torch.Tensor
    classes: list[int] | list[str]


def encode_labels(table: Table, where: str = "y") -> EncodedLabels:
    """The table's targets as class indices. Labels are strings or integers (floats that
    are whole numbers count as integers; booleans as 0 and 1)."""
    if table.labels is not None:
        names = sorted(set(table.labels))
        lookup = {name: i for i, name in enumerate(names)}
        indices = torch.tensor([lookup[label] for label in table.labels], dtype=torch.int64)
        return EncodedLabels(indices, names)
    y = table.y
    if y is None:
        raise InvalidInput("the data has no targets", code=ErrorCode.NO_TARGETS)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInput(
            f"{where}: class labels must be one per sample, [n_samples]; got shape {list(y.shape)}",
            details={"shape": list(y.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == torch.round(y)).all()):
            raise InvalidInput(
                f"{where}: class labels must be integers or strings; these are not whole "
                "numbers (for numeric targets use POST /regress/linear or task regression)",
                code=ErrorCode.LABELS_NOT_INTEGERS,
            )
        if y.numel() and float(y.abs().max()) >= 2**53:
            raise InvalidInput(
                f"{where}: integer labels must be below 2**53", code=ErrorCode.BAD_LABELS
            )
        y = y.to(torch.int64)
    values, indices = torch.unique(y.to(torch.int64), sorted=True, return_inverse=True)
    return EncodedLabels(indices, [int(v) for v in values.tolist()])
