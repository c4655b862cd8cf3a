"""A request's data as a table: a built-in dataset, ``x``/``y`` tensors or an uploaded CSV,
its chosen columns, finite values. Shared by ``/data/loader`` and the fits."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.datasets import CSV_FIELD, DataRequest
from service.config import Limits
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget
from service.ops.data.csv_reader import read_csv
from service.ops.data.datasets import is_loaded, load_dataset
from service.ops.data.table import Table, check_values, select
from service.ops.data.wire import table_from_tensors


@dataclass(frozen=True)
class Upload:
    """An uploaded file, read whole."""

    data: bytes
    filename: str


def load_table(
    limits: Limits,
    body: DataRequest,
    upload: Upload | None,
    *,
    text_target: bool,
    budget: Budget | None = None,
) -> Table:
    """The request's data as a table: its one source, the chosen columns, finite values.

    ``text_target``: the CSV's target column may hold class labels (strings). What is made
    one by one (names per column, labels, a CSV's cells) is charged to ``budget`` first.
    """
    given = [
        name
        for name, present in (
            ("dataset", body.dataset is not None),
            ("x", body.x is not None),
            (CSV_FIELD, upload is not None),
        )
        if present
    ]
    if not given:
        raise InvalidInput(
            "no data: give `dataset`, or `x` and `y`, or upload a CSV as `file`",
            code=ErrorCode.NO_DATA,
        )
    if len(given) > 1:
        raise InvalidInput(
            f"give one source of data, not {' and '.join(given)}", code=ErrorCode.SEVERAL_SOURCES
        )
    target = body.target
    if body.dataset is not None:
        table = load_dataset(body.dataset)
    elif body.x is not None:
        table = table_from_tensors(
            body.x.root,
            None if body.y is None else body.y.root,
            max_elements=limits.max_elements,
            budget=budget,
        )
    else:
        assert upload is not None
        table = read_csv(
            upload.data,
            limits,
            name=upload.filename,
            target=target,
            text_target=text_target,
            budget=budget,
        )
        target = None
    if budget is not None and body.features is not None:
        budget.charge_objects(table.n_features + len(body.features), "choosing the features")
    table = select(table, body.features, target)
    check_values(table)
    return table


def prepare_on_loop(body: DataRequest, upload: Upload | None) -> bool:
    """Whether a small body's data may be prepared on the event loop: not when it would
    load a dataset for the first time (that imports scikit-learn) or parse a CSV."""
    if upload is not None:
        return False
    return body.dataset is None or is_loaded(body.dataset)
