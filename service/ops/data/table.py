"""The :class:`Table` every source of data becomes, choosing its columns, and the checks of
its values that every fit relies on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from schemas.datasets import DatasetTask
from service.errors import ErrorCode, InvalidInput, clip

MAX_MAGNITUDE = 1e100
"""Largest absolute value of the data: sums of squares of values up to it stay far inside
float64's range, so no statistic of a fit overflows."""


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


MAX_LISTED_NAMES = 20
"""The most names (columns, features, targets) one list in an error holds."""
LISTED_NAME_CHARS = 300
"""The most characters of names one list in an error holds (the first name is always
listed, clipped to ``QUOTE_CHARS``). An error lists its names twice, in the message and in
``details``, and may list two kinds (the unknown names and those there are): with this
bound the whole body stays within about 2 KB, however many or long the names are."""


def listed_names(names: Sequence[str], limit: int = MAX_LISTED_NAMES) -> list[str]:
    """The first of ``names`` an error lists, each clipped: at most ``limit`` of them and
    :data:`LISTED_NAME_CHARS` characters together, but always the first."""
    shown: list[str] = []
    used = 0
    for name in names[:limit]:
        quoted = clip(name)
        used += len(quoted)
        if shown and used > LISTED_NAME_CHARS:
            break
        shown.append(quoted)
    return shown


def names_list(names: Sequence[str], limit: int = MAX_LISTED_NAMES) -> str:
    """Names for an error message: the first of them quoted (:func:`listed_names`), then
    how many more there are."""
    shown = listed_names(names, limit)
    text = ", ".join(repr(name) for name in shown)
    more = len(names) - len(shown)
    return f"{text}, … and {more:,} more" if more else text


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
            f"features: {names_list(missing, 5)} not in the data; its features: "
            f"{names_list(table.feature_names)}",
            details={
                "unknown": listed_names(missing, 5),
                "n_unknown": len(missing),
                "available": listed_names(table.feature_names),
                "n_available": table.n_features,
            },
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
            f"target {clip(target)!r} is not a target of {clip(table.name)!r}; its targets: "
            f"{names_list(table.target_names)}",
            details={
                "target": clip(target),
                "available": listed_names(table.target_names),
                "n_available": len(table.target_names),
            },
            code=ErrorCode.UNKNOWN_TARGET,
        )
    if table.y is None or table.y.ndim == 1:
        return table
    position = table.target_names.index(target)
    return replace(table, y=table.y[:, position], target_names=(target,))


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
