"""A table from the request's ``x`` and ``y`` wire tensors: their form checked before any is
decoded, JSON decimals kept as float64, string class labels kept as labels."""

from __future__ import annotations

import torch

from service.codec import WIRE_KEYS, decode_tensor
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget
from service.ops.data.table import Table

_DTYPE_KEYS = ("dtype", "datatype")
"""The keys that name a wire tensor's dtype (torchlab's and the Open Inference Protocol's)."""


def float64_wire(value: object) -> object:
    """``value``, a wire tensor, to decode as float64 unless it names its dtype: JSON decimals
    then keep their precision (the codec would otherwise infer float32, as torch.tensor
    does)."""
    if isinstance(value, list):
        return {"data": value, "dtype": "float64"}
    if isinstance(value, dict) and "data" in value and not _names_dtype(value):
        return {**value, "dtype": "float64"}
    return value


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
    if set(value) - WIRE_KEYS or ("data" in value) == ("b64" in value):
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
    for key in _DTYPE_KEYS:
        if key in value and not isinstance(value[key], str):
            raise InvalidInput(f"{where}.{key} must be a dtype name", code=ErrorCode.INVALID_DTYPE)


def column_names(prefix: str, count: int, budget: Budget | None, what: str) -> tuple[str, ...]:
    """``prefix0``, ``prefix1``, …: one name per column, charged to ``budget`` (one object
    each) before any is made."""
    if budget is not None:
        budget.charge_objects(count, f"{what} ({count:,} names)")
    return tuple(f"{prefix}{i}" for i in range(count))


def check_not_empty(n_samples: int, n_features: int) -> None:
    """Refuse data without samples or features (422 ``no_samples``, ``no_features``): before
    anything is made per column, so that ``[0, 2**25]`` costs nothing."""
    if n_samples == 0:
        raise InvalidInput("the data has no samples", code=ErrorCode.NO_SAMPLES)
    if n_features == 0:
        raise InvalidInput("the data has no features (x has 0 columns)", code=ErrorCode.NO_FEATURES)


def table_from_tensors(
    x_wire: object, y_wire: object | None, *, max_elements: int, budget: Budget | None = None
) -> Table:
    """A table from the request's ``x`` and ``y`` (wire tensors; ``y`` may be a list of
    string labels). Features are named ``x0``, ``x1``, …; the target ``y``.

    Data without samples or features is refused before anything is made per column, and
    every name and label is charged to ``budget`` (one object each) before it is made."""
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
    check_not_empty(int(x.shape[0]), int(x.shape[1]))
    names = column_names("x", int(x.shape[1]), budget, "the feature names")
    x = x.to(torch.float64)
    if y_wire is None:
        return Table(name="x", x=x, feature_names=names, source="tensors")
    if _is_text_labels(y_wire):
        assert isinstance(y_wire, list)
        _check_lengths(x.shape[0], len(y_wire))
        if budget is not None:
            budget.charge_objects(len(y_wire), f"{len(y_wire):,} labels")
        labels = tuple(y_wire)
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
    if y.ndim == 2 and y.shape[1] == 0:
        raise InvalidInput(
            "y has 0 columns; it must hold at least one target per sample",
            details={"shape": list(y.shape)},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    if y.dtype == torch.bool:
        y = y.to(torch.int64)
    targets = (
        ("y",) if y.ndim == 1 else column_names("y", int(y.shape[1]), budget, "the target names")
    )
    return Table(name="x", x=x, feature_names=names, source="tensors", y=y, target_names=targets)


def _is_text_labels(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _names_dtype(value: object) -> bool:
    return isinstance(value, dict) and any(key in value for key in _DTYPE_KEYS)


def _check_lengths(n_x: int, n_y: int) -> None:
    if n_x != n_y:
        raise InvalidInput(
            f"x has {n_x} samples but y has {n_y}; they must have one target per sample",
            details={"x_samples": n_x, "y_samples": n_y},
            code=ErrorCode.LENGTH_MISMATCH,
        )
