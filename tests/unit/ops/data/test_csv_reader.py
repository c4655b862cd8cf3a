"""Reading an uploaded CSV: the target column, text labels, the first bad cell named, and
the limits checked while the file is read."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from service.config import Limits
from service.errors import InvalidInput, LimitExceeded
from service.ops.data.csv_reader import (
    CSV_CELL_ELEMENTS,
    CSV_CELL_SECONDS,
    count_cells,
    read_csv,
)
from service.ops.data.table import Table
from tests.unit.ops.data.helpers import timed_budget

BIG = 1 << 30


def _limits(**limits: int) -> Limits:
    return Limits(**{"max_elements": BIG, **limits})


def _csv(text: str, limits: Limits | None = None, **options: Any) -> Table:
    return read_csv(text.encode(), limits or _limits(), **options)


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
        read_csv(b"a,b\n\xff,2\n", _limits())
    assert info.value.code == "csv_not_text"


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({"max_csv_rows": 2}, "max_csv_rows"),
        ({"max_csv_columns": 2}, "max_csv_columns"),
        ({"max_elements": 8}, "max_elements"),
    ],
)
def test_csv_limits_are_checked_while_reading(options: dict[str, int], limit: str) -> None:
    text = "a,b,c\n" + "1,2,3\n" * 3 + "not,even,read\n"
    with pytest.raises(LimitExceeded) as info:
        _csv(text, _limits(**options))
    assert info.value.limit == limit
    assert info.value.status_code == 413


# --- every cell is charged, and held without padding -----------------------------------------


def test_one_long_label_does_not_pad_every_cell() -> None:
    """numpy's fixed-width text would make each of the 2002 cells as long as the longest
    (200 kB each, 400 MB in all; 16 GB for 20k rows); as objects they stay their size."""
    long_label = "a" * 50_000
    text = "x,y\n" + "1,b\n" * 1000 + f"2,{long_label}\n"
    tracemalloc.start()
    try:
        table = _csv(text, text_target=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20
    assert table.labels is not None and len(table.labels) == 1001
    assert table.labels[-1] == long_label and table.x[-1, 0].item() == 2.0


def test_cells_are_counted_from_the_bytes_and_charged_before_parsing() -> None:
    text = "a,b,c\n" + "1,2,3\n" * 1000
    assert count_cells(text.encode()) >= 3 * 1001
    spent = timed_budget()
    _csv(text, budget=spent)
    assert spent.seconds >= 3 * 1001 * CSV_CELL_SECONDS
    big = ("a,b\n" + "1,2\n" * 500_000).encode()  # a million cells: a second to parse
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        read_csv(big, _limits(), budget=timed_budget(request_timeout_s=0.5))
    assert info.value.code == "over_time_budget"
    assert time.perf_counter() - start < 0.2


def test_the_cells_are_charged_the_memory_they_take_while_read() -> None:
    """A CSV of 16 million two-digit cells (48 MB) took 2 GB to read: each cell is a string
    of its own, in a list, then in an array of objects (measured here by tracemalloc)."""
    text = "a,b,c,d\n" + "12,34,56,78\n" * 50_000
    spent = timed_budget()
    tracemalloc.start()
    try:
        _csv(text, budget=spent)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > 40 * 4 * 50_000  # tens of bytes a cell
    assert spent.elements * 8 >= peak
    assert CSV_CELL_ELEMENTS * count_cells(text.encode()) <= spent.elements
