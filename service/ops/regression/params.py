"""Fitted models ready to predict, read from the JSON form a fit returns (``model``), and the
input of ``POST /regress/predict``.

The model travels in the request, so every shape in it is checked against the others (coef
against the features, rows against the classes, the scaler's length) before it is used: a
model that does not fit together is a 422 ``invalid_model``, never a torch error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from schemas.regression import LinearModel, LogisticModel
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget


def charge_model(model: LinearModel | LogisticModel, budget: Budget) -> None:
    """Charge the numbers and names of a model, read one by one into tensors and checked,
    before any is: its coefficients counted row by row (a row's length is known)."""
    coef: Sequence[Any] = model.coef
    numbers = sum(len(row) for row in coef) if _is_nested(coef) else len(coef)
    names = len(model.features)
    if isinstance(model, LogisticModel):
        names += len(model.classes)
        if model.scaler is not None:
            numbers += len(model.scaler.mean) + len(model.scaler.scale)
    elif model.targets is not None:
        names += len(model.targets)
    budget.charge_objects(numbers + names, f"the model's {numbers:,} numbers and {names:,} names")


def _model_error(message: str, **details: object) -> InvalidInput:
    return InvalidInput(f"model: {message}", details=dict(details), code=ErrorCode.INVALID_MODEL)


def _vector(values: Sequence[float], where: str) -> torch.Tensor:
    tensor = torch.tensor(values, dtype=torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise _model_error(f"{where} holds non-finite values")
    return tensor


def _is_nested(coef: Sequence[Any]) -> bool:
    return bool(coef) and isinstance(coef[0], list)


def _matrix(coef: Sequence[Any], where: str) -> torch.Tensor:
    """A model's coef as [rows, d]: a flat list is one row."""
    if _is_nested(coef):
        widths = {len(row) for row in coef}
        if len(widths) != 1:
            raise _model_error(f"the rows of {where} have different lengths {sorted(widths)}")
        return _vector([v for row in coef for v in row], where).reshape(len(coef), -1)
    return _vector(coef, where).reshape(1, -1)


@dataclass(frozen=True)
class LinearParams:
    """A linear model ready to predict: ``x @ coef.T + intercept``."""

    coef: torch.Tensor  # [k, d]
    intercept: torch.Tensor  # [k]
    single_target: bool

    @property
    def n_features(self) -> int:
        """The features the model takes (the columns of x)."""
        return int(self.coef.shape[1])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predictions for ``x`` [n, d]: [n] for one target, [n, k] for several."""
        out = x @ self.coef.to(x.device).T + self.intercept.to(x.device)
        return out[:, 0] if self.single_target else out


def linear_params(
    coef: Sequence[Any],
    intercept: float | Sequence[float],
    features: Sequence[str],
    targets: Sequence[str] | None,
) -> LinearParams:
    """A linear model from its JSON form, its shapes checked (422 ``invalid_model``)."""
    single = not _is_nested(coef)
    matrix = _matrix(coef, "coef")
    if matrix.shape[1] != len(features):
        raise _model_error(
            f"coef has {matrix.shape[1]} weights per target but features names {len(features)}",
            coef_width=int(matrix.shape[1]),
            features=len(features),
        )
    if isinstance(intercept, int | float):
        if not single:
            raise _model_error(
                f"coef has {matrix.shape[0]} rows (targets); intercept must be a list of "
                f"{matrix.shape[0]}"
            )
        bias = _vector([float(intercept)], "intercept")
    else:
        if single:
            raise _model_error("one target (a flat coef) takes a number as intercept")
        bias = _vector(intercept, "intercept")
    if bias.shape[0] != matrix.shape[0]:
        raise _model_error(
            f"coef has {matrix.shape[0]} rows (targets) but intercept has {bias.shape[0]}"
        )
    if targets is not None and len(targets) != matrix.shape[0]:
        raise _model_error(
            f"targets names {len(targets)} but coef has {matrix.shape[0]} row(s) of weights"
        )
    return LinearParams(matrix, bias, single)


@dataclass(frozen=True)
class LogisticParams:
    """A logistic model ready to predict."""

    weight: torch.Tensor  # [1, d] binary or [C, d]
    bias: torch.Tensor
    classes: list[int] | list[str]
    threshold: float | None
    mean: torch.Tensor | None
    scale: torch.Tensor | None

    @property
    def n_features(self) -> int:
        """The features the model takes (the columns of x)."""
        return int(self.weight.shape[1])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The scores of ``x`` [n, d], standardised first when the model has a scaler:
        [n, 1] (the logit of ``classes[1]``) for two classes, [n, C] for more."""
        device = x.device
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean.to(device)) / self.scale.to(device)
        return x @ self.weight.to(device).T + self.bias.to(device)

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        """P(class) per sample, [n, C]."""
        if len(self.classes) == 2:
            positive = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices: binary P(classes[1]) > threshold, else the most probable class."""
        if len(self.classes) == 2:
            threshold = 0.5 if self.threshold is None else self.threshold
            return (torch.sigmoid(logits[:, 0]) > threshold).to(torch.int64)
        return logits.argmax(dim=1)


def logistic_params(
    *,
    classes: list[int] | list[str],
    coef: Sequence[Any],
    intercept: float | Sequence[float],
    threshold: float | None,
    scaler_mean: Sequence[float] | None,
    scaler_scale: Sequence[float] | None,
    features: Sequence[str],
) -> LogisticParams:
    """A logistic model from its JSON form, its shapes checked (422 ``invalid_model``)."""
    if len(set(classes)) != len(classes):
        raise _model_error("classes holds a label twice")
    binary = len(classes) == 2
    flat = not _is_nested(coef)
    matrix = _matrix(coef, "coef")
    if binary and not flat:
        raise _model_error("two classes take coef as [n_features] (the logit of classes[1])")
    if not binary and (flat or matrix.shape[0] != len(classes)):
        rows = 1 if flat else int(matrix.shape[0])
        raise _model_error(
            f"{len(classes)} classes take coef as [n_classes][n_features]: one row per "
            f"class; it has {rows}",
            classes=len(classes),
            rows=rows,
        )
    if matrix.shape[1] != len(features):
        raise _model_error(
            f"coef has {matrix.shape[1]} weights per row but features names {len(features)}",
            coef_width=int(matrix.shape[1]),
            features=len(features),
        )
    if binary:
        if not isinstance(intercept, int | float):
            raise _model_error("two classes take intercept as a number")
        bias = _vector([float(intercept)], "intercept")
    else:
        if isinstance(intercept, int | float) or len(intercept) != len(classes):
            raise _model_error(f"{len(classes)} classes take intercept as a list of as many")
        bias = _vector(intercept, "intercept")
        if threshold is not None:
            raise _model_error("threshold applies to two classes; give null for more")
    mean = scale = None
    if (scaler_mean is None) != (scaler_scale is None):
        raise _model_error("scaler needs mean and scale")
    if scaler_mean is not None and scaler_scale is not None:
        mean, scale = _vector(scaler_mean, "scaler.mean"), _vector(scaler_scale, "scaler.scale")
        if mean.shape[0] != matrix.shape[1] or scale.shape[0] != matrix.shape[1]:
            raise _model_error(
                f"scaler has {mean.shape[0]} means and {scale.shape[0]} scales for "
                f"{matrix.shape[1]} features"
            )
        if not bool((scale > 0).all()):
            raise _model_error("scaler.scale must be positive")
    return LogisticParams(matrix, bias, classes, threshold, mean, scale)


def prediction_input(x: torch.Tensor, n_features: int) -> torch.Tensor:
    """``x`` as float64 [n, n_features]; a model of one feature also takes [n]."""
    if x.ndim == 1 and n_features == 1:
        x = x.unsqueeze(1)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise InvalidInput(
            f"x has shape {list(x.shape)}; this model takes [n_samples, {n_features}]"
            + (" (or [n_samples])" if n_features == 1 else ""),
            details={"shape": list(x.shape), "n_features": n_features},
            code=ErrorCode.SHAPE_MISMATCH,
        )
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise InvalidInput("x holds NaN or infinite values", code=ErrorCode.NON_FINITE)
    return x


def plan_predict(n: int, d: int, outputs: int, budget: Budget) -> None:
    """Charge a prediction's tensors and FLOPs."""
    budget.charge_tensor(n * d, "x (float64)")
    budget.charge_tensor(n * outputs, "the predictions")
    budget.charge_flops(2.0 * n * d * outputs + 8.0 * n * outputs, "the predictions")
