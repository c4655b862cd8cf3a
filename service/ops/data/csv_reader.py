"""A table from an uploaded CSV file: UTF-8, comma-separated, a header row naming the
columns; every cell a finite number except class labels in the target column. The limits
on rows, columns and cells are checked while the file is read."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import torch

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, clip
from service.limits import Budget
from service.ops.data.table import Table, listed_names, names_list

CSV_CELL_SECONDS = 1e-6
"""Predicted time of one cell: the csv module makes a string of it, the reader checks and
keeps it, numpy converts it (about a microsecond in all)."""


CSV_CELL_ELEMENTS = 16
"""Memory of one cell while the CSV is read, in elements of 8 bytes: a Python string of its
own (50 bytes and more), a place in its row's list, then in an array of objects, and its
number. A CSV of 16 million cells of two digits (48 MB) took 2 GB to read, 125 bytes a
cell (tracemalloc: 118)."""


def count_cells(data: bytes) -> int:
    """At most how many cells ``data`` holds: each ends at a comma, a line break or the end
    (a quoted comma or line break only over-counts)."""
    return data.count(b",") + data.count(b"\n") + data.count(b"\r") + 1


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
    limits: Limits,
    *,
    name: str = "csv",
    target: str | None = None,
    text_target: bool = False,
    budget: Budget | None = None,
) -> Table:
    """A table from CSV bytes (UTF-8, comma-separated, a header row naming the columns).

    ``target`` names the target column (default: the last one); every other column is a
    feature. Every cell must be a finite number, except the target's when ``text_target``
    (class labels: strings are kept as labels if any cell is not a number). Limits on rows,
    columns and cells (``limits.max_csv_rows``, ``max_csv_columns``, ``max_elements``) are
    checked row by row as the file is read, before the rest is parsed. Raises
    :class:`InvalidInput` naming the first bad cell, or :class:`LimitExceeded`.

    Every cell is made one by one (a string, then a number): their count, bounded from the
    bytes before anything is parsed, is charged to ``budget`` as time and as the memory
    they take (:data:`CSV_CELL_ELEMENTS`).
    """
    if budget is not None:
        count = count_cells(data)
        budget.charge_seconds(count * CSV_CELL_SECONDS, f"parsing the CSV's {count:,} cells")
        budget.charge_tensors(count * CSV_CELL_ELEMENTS, f"the CSV's {count:,} cells, read")
    max_rows, max_columns = limits.max_csv_rows, limits.max_csv_columns
    max_elements = limits.max_elements
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
            f"target {clip(target_name)!r} is not a column of the CSV; columns: "
            f"{names_list(header)}",
            ErrorCode.UNKNOWN_COLUMN,
            target=clip(target_name),
            columns=listed_names(header),
            n_columns=len(header),
        )
    if len(header) < 2:
        raise _csv_error(
            "the CSV has one column; it needs feature columns and a target column",
            ErrorCode.CSV_NO_FEATURES,
        )
    target_index = header.index(target_name)
    feature_index = [i for i in range(len(header)) if i != target_index]
    # Objects, not fixed-width text: numpy's str_ would pad every cell to the longest one
    # (one cell of 100k characters would make each of a million cells 400 kB).
    cells = np.empty((len(rows), len(header)), dtype=object)
    cells[:] = rows
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


def _check_header(header: list[str]) -> None:
    if all(_is_number(cell) for cell in header):
        raise _csv_error(
            "the CSV's first row holds numbers: it needs a header row naming the columns",
            ErrorCode.CSV_NO_HEADER,
            first_row=listed_names(header),
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
                f"the CSV's header names column {clip(cell)!r} twice",
                ErrorCode.CSV_BAD_HEADER,
                column=clip(cell),
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
        column = clip(names[col])
        raise _csv_error(
            f"CSV line {lines[row]} (data row {row + 1}), column {column!r}: "
            f"{cell[:40]!r} is not a finite number (every cell must be a number, except "
            "class labels in the target column of a classification)",
            ErrorCode.CSV_NOT_NUMERIC,
            line=lines[row],
            row=row + 1,
            column=column,
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
