"""How good a fit is, on its training and (with a split) its test samples.

Linear: r2 (scikit-learn's ``r2_score``), MSE, MAE, and Pearson's r of every feature with
every target with the tutorial's words for its strength. Logistic: accuracy, the log loss,
the confusion matrix and per-class precision and recall. A value that is not finite, or
not defined (a constant column, an empty class), is None: JSON has no NaN.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)

from service.ops.regression.params import LogisticParams
from service.ops.regression.split import Split

Strength = Literal["weak", "moderate", "strong"]


def finite_or_none(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite."""
    return value if math.isfinite(value) else None


def strength(r: float) -> Strength:
    """The tutorial's scale on |r|: weak below 0.3, moderate below 0.6, strong above."""
    magnitude = abs(r)
    if magnitude < 0.3:
        return "weak"
    if magnitude < 0.6:
        return "moderate"
    return "strong"


# --- linear ----------------------------------------------------------------------------------


def r2_score(y: torch.Tensor, prediction: torch.Tensor) -> float | None:
    """scikit-learn's r2_score, averaged over targets ([m, k]); a constant target scores 1
    when predicted exactly, else 0. None with fewer than 2 samples."""
    if y.shape[0] < 2:
        return None
    ss_res = ((y - prediction) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    exact = torch.where(ss_res == 0, 1.0, 0.0).to(torch.float64)
    per_target = torch.where(ss_tot > 0, 1 - ss_res / torch.where(ss_tot > 0, ss_tot, 1), exact)
    return finite_or_none(float(per_target.mean()))


def linear_metrics(
    y: torch.Tensor, predictions: torch.Tensor, split: Split
) -> dict[str, float | None]:
    """r2, MSE and MAE of ``predictions`` against ``y`` (both [n, k], every sample) on the
    training samples and, with the suffix ``_test``, on the test samples (None without)."""
    metrics: dict[str, float | None] = {}
    for suffix, index in (("", split.train), ("_test", split.test)):
        if index.numel() == 0:
            metrics.update({f"r2{suffix}": None, f"mse{suffix}": None, f"mae{suffix}": None})
            continue
        truth, guess = y[index], predictions[index]
        error = guess - truth
        metrics[f"r2{suffix}"] = r2_score(truth, guess)
        metrics[f"mse{suffix}"] = finite_or_none(float((error**2).mean()))
        metrics[f"mae{suffix}"] = finite_or_none(float(error.abs().mean()))
    return metrics


def pearson(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """Pearson's r of every column of x with every column of y, given centred: [d, k], NaN
    where a column is constant."""
    return pearson_of(xc.T @ yc, torch.linalg.vector_norm(xc, dim=0), yc)


def pearson_of(products: torch.Tensor, x_norms: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """:func:`pearson` from what it takes of the centred x: ``xcᵀ yc`` [d, k] and the norm of
    each column of ``xc`` [d] (a QR of ``xc`` gives both)."""
    scale = x_norms.unsqueeze(1) * torch.linalg.vector_norm(yc, dim=0).unsqueeze(0)
    r = products / torch.where(scale > 0, scale, 1)
    return torch.where(scale > 0, r.clamp(-1, 1), math.nan)


# --- logistic --------------------------------------------------------------------------------


def log_loss(
    logits: torch.Tensor, labels: torch.Tensor, binary: bool, reduction: str = "mean"
) -> torch.Tensor:
    """The log loss of ``logits`` ([n, 1] binary, [n, C] otherwise) for the class indices
    ``labels`` [n]: binary cross-entropy on the logit, or cross-entropy on the softmax."""
    if binary:
        return F.binary_cross_entropy_with_logits(
            logits[:, 0], labels.to(logits.dtype), reduction=reduction
        )
    return F.cross_entropy(logits, labels, reduction=reduction)


def confusion_matrix(truth: torch.Tensor, guess: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C, C] counts: row i, column j holds the samples of class i predicted as j."""
    counts = torch.bincount(truth * n_classes + guess, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _ratios(numerator: torch.Tensor, denominator: torch.Tensor) -> list[float | None]:
    return [
        None if int(den) == 0 else int(num) / int(den)
        for num, den in zip(numerator.tolist(), denominator.tolist(), strict=True)
    ]


def logistic_metrics(
    params: LogisticParams, x: torch.Tensor, labels: torch.Tensor, split: Split
) -> dict[str, Any]:
    """Accuracy, log loss, confusion matrix, precision and recall (per class, None for a
    class never predicted or never present) of the model on ``x`` [n, d] against the class
    indices ``labels`` [n], on the training and (suffix ``_test``) the test samples."""
    logits = params.logits(x.to(torch.float64))
    predicted = params.decide(logits)
    binary = len(params.classes) == 2
    metrics: dict[str, Any] = {}
    for suffix, index in (("", split.train), ("_test", split.test)):
        if index.numel() == 0:
            for name in ("accuracy", "log_loss", "confusion_matrix", "precision", "recall"):
                metrics[name + suffix] = None
            continue
        truth, guess = labels[index], predicted[index]
        loss = float(log_loss(logits[index], truth, binary))
        matrix = confusion_matrix(truth, guess, len(params.classes))
        metrics["accuracy" + suffix] = float((truth == guess).to(torch.float64).mean())
        metrics["log_loss" + suffix] = finite_or_none(loss)
        metrics["confusion_matrix" + suffix] = matrix.tolist()
        metrics["precision" + suffix] = _ratios(matrix.diagonal(), matrix.sum(0))
        metrics["recall" + suffix] = _ratios(matrix.diagonal(), matrix.sum(1))
    return metrics
