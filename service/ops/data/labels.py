"""Class labels as int64 indices: strings sorted into classes, integers (or whole floats)
kept or ranked."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from service.errors import ErrorCode, InvalidInput, LimitExceeded
from service.limits import Budget
from service.ops.data.table import Table

INT53 = 2**53
"""Integers a float64 holds exactly: a float label at or past it may not be the one sent."""


@dataclass(frozen=True)
class EncodedLabels:
    """Class labels as indices ``0..C-1`` into ``classes`` (sorted)."""

    indices: torch.Tensor
    classes: list[int] | list[str]


def encode_labels(
    table: Table,
    where: str = "y",
    *,
    max_classes: int | None = None,
    budget: Budget | None = None,
) -> EncodedLabels:
    """The table's targets as class indices. Labels are strings or integers (floats that
    are whole numbers count as integers; booleans as 0 and 1).

    The classes are counted before their list is made: more than ``max_classes`` is a 413,
    and each label looked up and each class listed is charged to ``budget``."""
    if table.labels is not None:
        return _encode_strings(table.labels, max_classes, budget)
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
        if y.numel() and float(y.abs().max()) >= INT53:
            raise InvalidInput(
                f"{where}: integer labels must be below 2**53", code=ErrorCode.BAD_LABELS
            )
        y = y.to(torch.int64)
    values, indices = torch.unique(y.to(torch.int64), sorted=True, return_inverse=True)
    _charge_classes(int(values.numel()), max_classes, budget)
    return EncodedLabels(indices, [int(v) for v in values.tolist()])


def _charge_classes(count: int, max_classes: int | None, budget: Budget | None) -> None:
    if max_classes is not None and count > max_classes:
        raise LimitExceeded("max_classes", max_classes, count, "the labels")
    if budget is not None:
        budget.charge_objects(count, f"listing {count:,} classes")


def class_targets(
    table: Table, budget: Budget | None = None
) -> tuple[torch.Tensor, list[int] | list[str] | None]:
    """int64 targets for a classification loader: integer labels as they are (no classes
    listed), string labels as indices into their sorted classes."""
    if table.labels is not None:
        encoded = _encode_strings(table.labels, None, budget)
        return encoded.indices, encoded.classes
    if table.y is None:
        raise InvalidInput("the data has no targets", code=ErrorCode.NO_TARGETS)
    y = table.y
    if y.is_floating_point() and not bool((y == torch.round(y)).all()):
        raise InvalidInput(
            "task classification needs integer (or string) labels; these targets are not "
            "whole numbers (use task regression)",
            code=ErrorCode.LABELS_NOT_INTEGERS,
        )
    if y.is_floating_point() and y.numel() and float(y.abs().max()) >= 2**63:
        raise InvalidInput("labels must fit int64", code=ErrorCode.LABELS_NOT_INTEGERS)
    return y.to(torch.int64), None


def _encode_strings(
    labels: tuple[str, ...], max_classes: int | None, budget: Budget | None
) -> EncodedLabels:
    if budget is not None:
        budget.charge_objects(len(labels), f"encoding {len(labels):,} labels")
    distinct = set(labels)
    _charge_classes(len(distinct), max_classes, budget)
    names = sorted(distinct)
    lookup = {name: i for i, name in enumerate(names)}
    indices = torch.tensor([lookup[label] for label in labels], dtype=torch.int64)
    return EncodedLabels(indices, names)
