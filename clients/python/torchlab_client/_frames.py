"""Tables as data scientists hold them: pandas DataFrames and Series, duck-typed (pandas is
not a dependency of the client): an object with ``columns`` and ``__array__`` is a table,
one with ``name``, ``index`` and ``__array__`` a column. Their names travel as feature and
target names; their values as arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torchlab_client._codec import NDArray, is_tensor
from torchlab_client._names import did_you_mean


def is_frame(value: object) -> bool:
    """Whether ``value`` is a table with named columns (a pandas DataFrame)."""
    return hasattr(value, "columns") and hasattr(value, "__array__") and not is_tensor(value)


def is_series(value: object) -> bool:
    """Whether ``value`` is one named column (a pandas Series)."""
    return (
        not is_frame(value)
        and not is_tensor(value)
        and hasattr(value, "__array__")
        and hasattr(value, "name")
        and hasattr(value, "index")
    )


def column_names(value: object) -> list[str] | None:
    """A table's column names, a named column's name, or None."""
    if is_frame(value):
        return [str(name) for name in getattr(value, "columns")]  # noqa: B009
    if is_series(value):
        name = getattr(value, "name")  # noqa: B009
        return None if name is None else [str(name)]
    return None


def select_columns(value: Any, names: Sequence[str], where: str) -> NDArray:
    """The named columns of a table, in that order, as a 2-D array."""
    columns = column_names(value) or []
    for name in names:
        if name not in columns:
            shown = ", ".join(repr(c) for c in columns[:20])
            raise ValueError(
                f"{where} has no column {name!r}{did_you_mean(name, columns)}; its columns: "
                f"{shown}{', …' if len(columns) > 20 else ''}"
            )
    array = np.asarray(value)
    if array.ndim == 1:
        array = array[:, None]
    return array[:, [columns.index(name) for name in names]]


def labels_or_array(value: Any) -> Any:
    """Targets as the service takes them: text labels (strings, a pandas categorical) as a
    list of strings, numbers as an array (``value`` itself when it is no array)."""
    if is_tensor(value) or not hasattr(value, "__array__") or isinstance(value, np.generic):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "OUS":
        if array.ndim != 1:
            raise TypeError(f"text labels must be one column, got shape {list(array.shape)}")
        if not all(isinstance(item, str | np.str_) for item in array.tolist()):
            raise TypeError(
                "the targets mix text and other values (or hold missing values); give "
                "strings only, or numbers only"
            )
        return [str(item) for item in array.tolist()]
    return array
