"""Linear and logistic regression in torch, their metrics, and predictions from a model.

* Linear, ``lstsq``: the least-squares solution of the centred data, ``torch.linalg.lstsq``
  with LAPACK's SVD-based ``gelsd`` driver in float64 on the CPU (an explicit SVD with the
  same cut-off on CUDA, whose ``lstsq`` only has a QR driver that assumes full rank). So an
  ill-conditioned or rank-deficient problem gets the minimum-norm solution scikit-learn's
  ``LinearRegression`` computes, never the normal equations' squared condition number.
* Linear, ``gd``: ``nn.Linear`` trained on the MSE by SGD or Adam, as a tutorial writes it,
  on standardised x and y; the weights are converted back to the original units.
* Logistic: a linear score, then the sigmoid (two classes) or the softmax (more); the mean
  log loss plus ``l2/2·‖W‖²``; L-BFGS with a strong-Wolfe line search by default (as
  scikit-learn's default solver), SGD or Adam on request.

Everything is planned first: tensors and FLOPs are charged to a :class:`Budget` before any
work. Training checks the deadline every epoch, and random draws (the split, the initial
weights, mini-batch orders) come from a private generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)
from torch import nn

from service.errors import ErrorCode, InvalidInput, LimitExceeded, OpError
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.datasets import EncodedLabels, Table, encode_labels

CPU = torch.device("cpu")
F64 = torch.float64

MAX_CLASSES = 1000
"""Classes a logistic regression may have (the schema's bound on ``classes`` is the same)."""
EPOCH_OVERHEAD_FLOPS = 1e6
"""Charged per epoch on top of the arithmetic: on small data an epoch's time is Python and
kernel launches (tens of microseconds), which the FLOP count alone would not bound."""
LBFGS_EVALS_PER_EPOCH = 2
"""Loss evaluations an L-BFGS iteration is charged for (the strong-Wolfe line search mostly
accepts its first step; the limit on time covers the rare longer searches)."""
MAX_LINE_SEARCH = 25
STALL_TOLERANCE = 1e-12
"""Relative change of the loss between L-BFGS iterations below which it stopped moving."""

Strength = Literal["weak", "moderate", "strong"]


def strength(r: float) -> Strength:
    """The tutorial's scale on |r|: weak below 0.3, moderate below 0.6, strong above."""
    magnitude = abs(r)
    if magnitude < 0.3:
        return "weak"
    if magnitude < 0.6:
        return "moderate"
    return "strong"


@dataclass(frozen=True)
class Split:
    """Sample indices (sorted) of the training and test sets."""

    train: torch.Tensor
    test: torch.Tensor


def split_samples(n: int, test_size: float, generator: torch.Generator, minimum: int = 2) -> Split:
    """``ceil(test_size·n)`` samples for testing, drawn by a seeded permutation; the rest
    train. Raises :class:`InvalidInput` when fewer than ``minimum`` samples would train."""
    n_test = math.ceil(test_size * n) if test_size > 0 else 0
    if n - n_test < minimum:
        raise InvalidInput(
            f"{n} samples with test_size {test_size:g} leave {n - n_test} to train; at "
            f"least {minimum} are needed",
            details={"n_samples": n, "n_test": n_test, "min_train": minimum},
            code=ErrorCode.TOO_FEW_SAMPLES,
        )
    if n_test == 0:
        return Split(torch.arange(n), torch.arange(0))
    order = torch.randperm(n, generator=generator)
    return Split(order[n_test:].sort().values, order[:n_test].sort().values)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _charge_data(n: int, d: int, k: int, budget: Budget) -> None:
    budget.charge_tensor(n * d, f"x of {n:,} samples × {d:,} features (float64)")
    budget.charge_tensor(n * k, "the targets")
    budget.charge_tensor(n * d, "the training copy of x")
    budget.charge_tensor(n * k, "the predictions")


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's mini-batches (a seeded shuffle); one batch of everything by default."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    order = torch.randperm(n, generator=generator)
    return list(torch.split(order, batch_size))


def _diverged(epoch: int, lr: float) -> InvalidInput:
    return InvalidInput(
        f"training diverged: the loss is not finite after epoch {epoch} (lr {lr:g}); lower "
        "lr, or standardise the data",
        details={"epoch": epoch, "lr": lr},
        code=ErrorCode.DIVERGED,
    )


def _standardizer(x: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (zeros without ``center``) and standard deviation of each column, with 1 for a
    constant column (as scikit-learn's StandardScaler)."""
    mean = x.mean(0) if center else torch.zeros_like(x[0])
    scale = x.std(0, correction=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return mean, scale


# --- linear regression -----------------------------------------------------------------------


@dataclass(frozen=True)
class LinearOptions:
    """How to fit a linear regression (the request's fields)."""

    method: Literal["lstsq", "gd"] = "lstsq"
    fit_intercept: bool = True
    test_size: float = 0.0
    rcond: float | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    epochs: int = 1000
    lr: float | None = None
    batch_size: int | None = None
    standardize: bool = True
    seed: int | None = None

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 if self.optimizer == "sgd" else 0.01


def regression_targets(table: Table) -> torch.Tensor:
    """The table's targets as float64, [n] or [n, k]; a 422 when they are labels."""
    if table.labels is not None:
        raise InvalidInput(
            "the targets are text labels; a linear regression needs numbers (use "
            "POST /regress/logistic for classes)",
            code=ErrorCode.TARGETS_NOT_NUMERIC,
        )
    if table.y is None:
        raise InvalidInput("the data has no targets", code=ErrorCode.NO_TARGETS)
    return table.y.to(F64)


def plan_linear_fit(n: int, d: int, k: int, options: LinearOptions, budget: Budget) -> None:
    """Charge a linear fit's tensors and FLOPs (before any work)."""
    _charge_data(n, d, k, budget)
    metrics = 8.0 * n * d * k
    if options.method == "lstsq":
        # Householder QR of [n, d], the SVD of the [d, d] factor, and Qᵀb.
        flops = 4.0 * n * d * d + 22.0 * d**3 + 4.0 * n * d * k + metrics
        budget.charge_flops(flops, f"a least-squares fit of {n:,} × {d:,}")
        return
    per_epoch = 6.0 * n * d * k + 8.0 * n * k + EPOCH_OVERHEAD_FLOPS
    budget.charge_flops(
        options.epochs * per_epoch + metrics,
        f"{options.epochs:,} epochs of gradient descent on {n:,} × {d:,}",
    )


@dataclass
class LinearFit:
    """A fitted linear regression with what the response and the plot need."""

    coef: torch.Tensor  # [k, d], float64, CPU
    intercept: torch.Tensor  # [k]
    single_target: bool
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    metrics: dict[str, float | None]
    correlations: torch.Tensor  # [d, k], NaN where undefined
    split: Split
    predictions: torch.Tensor  # [n, k] for every sample, CPU
    loss_history: list[float] | None = None
    epochs: int | None = None

    def model(self) -> dict[str, Any]:
        """The model as plain JSON values, for ``POST /regress/predict``."""
        coef = self.coef[0].tolist() if self.single_target else self.coef.tolist()
        intercept = float(self.intercept[0]) if self.single_target else self.intercept.tolist()
        return {
            "kind": "linear",
            "coef": coef,
            "intercept": intercept,
            "features": list(self.feature_names),
            "targets": list(self.target_names),
        }

    def correlation_list(self) -> list[dict[str, Any]]:
        rows = []
        for i, feature in enumerate(self.feature_names):
            for j, target in enumerate(self.target_names):
                r = _finite_or_none(float(self.correlations[i, j]))
                rows.append(
                    {
                        "feature": feature,
                        "target": target,
                        "r": r,
                        "strength": None if r is None else strength(r),
                    }
                )
        return rows

    @property
    def pearson_r(self) -> float | None:
        """Pearson's r of the one feature with the one target; None otherwise."""
        if self.correlations.shape != (1, 1):
            return None
        return _finite_or_none(float(self.correlations[0, 0]))


def fit_linear(
    table: Table, options: LinearOptions, *, device: torch.device, deadline: Deadline
) -> LinearFit:
    """Fit ``table`` (x float64 [n, d], numeric y) by ``options.method``."""
    y = regression_targets(table)
    single = y.ndim == 1
    y2 = y.reshape(y.shape[0], -1)
    generator = make_generator(options.seed)
    split = split_samples(table.n_samples, options.test_size, generator)
    x_train, y_train = table.x.to(F64), y2
    if split.test.numel():
        x_train, y_train = x_train.index_select(0, split.train), y2.index_select(0, split.train)
    x_train, y_train = x_train.to(device), y_train.to(device)
    # Centred once: for the closed form and for the correlations.
    x_centred, y_centred = x_train - x_train.mean(0), y_train - y_train.mean(0)
    history = None
    if options.method == "lstsq":
        coef, intercept = _lstsq_fit(
            x_train, y_train, options.fit_intercept, options.rcond, (x_centred, y_centred)
        )
    else:
        coef, intercept, history = _gd_fit(x_train, y_train, options, generator, deadline)
    coef, intercept = coef.cpu(), intercept.cpu()
    if not (bool(torch.isfinite(coef).all()) and bool(torch.isfinite(intercept).all())):
        raise InvalidInput(
            "the fit has non-finite coefficients: the data's values are too large for "
            "float64 arithmetic; rescale them",
            code=ErrorCode.NON_FINITE_FIT,
        )
    deadline.check()
    predictions = table.x.to(F64) @ coef.T + intercept
    metrics = _linear_metrics(y2, predictions, split)
    return LinearFit(
        coef=coef,
        intercept=intercept,
        single_target=single,
        feature_names=table.feature_names,
        target_names=table.target_names,
        metrics=metrics,
        correlations=_pearson(x_centred, y_centred).cpu(),
        split=split,
        predictions=predictions,
        loss_history=history,
        epochs=None if history is None else len(history),
    )


def lstsq(a: torch.Tensor, b: torch.Tensor, rcond: float | None = None) -> torch.Tensor:
    """The minimum-norm least-squares solution of ``a @ s ≈ b`` ([n, d], [n, k] → [d, k]).

    Singular values below ``rcond`` × the largest count as zero; default machine precision
    × max(n, d), LAPACK's and torch's default.
    """
    try:
        if a.device.type == "cpu":
            solution: torch.Tensor = torch.linalg.lstsq(a, b, rcond=rcond, driver="gelsd").solution
            return solution
        # CUDA's lstsq has only the QR driver, which assumes full rank: an SVD instead.
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
    except RuntimeError as exc:  # LAPACK's SVD did not converge
        raise OpError(f"least squares: {str(exc).splitlines()[0]}") from exc
    cutoff = rcond if rcond is not None else torch.finfo(a.dtype).eps * max(a.shape)
    keep = s > cutoff * s[0] if s.numel() else s > 0
    inverse = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), 0.0)
    result: torch.Tensor = vh.mT @ (inverse.unsqueeze(1) * (u.mT @ b))
    return result


def _lstsq_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    fit_intercept: bool,
    rcond: float | None,
    centred: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    # Centring, as scikit-learn does, separates the intercept from the slopes: the
    # intercept column would otherwise add to the condition number.
    if fit_intercept:
        solution = lstsq(*centred, rcond)
        return solution.T, y.mean(0) - x.mean(0) @ solution
    solution = lstsq(x, y, rcond)
    return solution.T, torch.zeros(y.shape[1], dtype=F64, device=y.device)


def init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """``layer``'s parameters drawn as ``nn.Linear.reset_parameters`` draws them, from
    ``generator`` (on the CPU: the same numbers on any device)."""
    with torch.no_grad():
        weight = torch.empty(layer.weight.shape, dtype=layer.weight.dtype)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        layer.weight.copy_(weight)
        if layer.bias is not None:
            fan_in = layer.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            bias = torch.empty(layer.bias.shape, dtype=layer.bias.dtype)
            nn.init.uniform_(bias, -bound, bound, generator=generator)
            layer.bias.copy_(bias)


def _gd_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    options: LinearOptions,
    generator: torch.Generator,
    deadline: Deadline,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    n, d = x.shape
    k = y.shape[1]
    if options.standardize:
        x_mean, x_scale = _standardizer(x, options.fit_intercept)
        y_mean, y_scale = _standardizer(y, options.fit_intercept)
    else:
        x_mean, x_scale = torch.zeros_like(x[0]), torch.ones_like(x[0])
        y_mean, y_scale = torch.zeros_like(y[0]), torch.ones_like(y[0])
    xs = (x - x_mean) / x_scale
    ys = (y - y_mean) / y_scale
    units = y_scale**2  # the MSE of standardised targets, back in the target's units

    layer = nn.Linear(d, k, bias=options.fit_intercept, dtype=F64)
    init_linear(layer, generator)
    layer.to(x.device)
    lr = options.learning_rate
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(layer.parameters(), lr=lr)
        if options.optimizer == "sgd"
        else torch.optim.Adam(layer.parameters(), lr=lr)
    )
    history: list[float] = []
    for epoch in range(1, options.epochs + 1):
        deadline.check()
        total = torch.zeros((), dtype=F64, device=x.device)
        for batch in _batches(n, options.batch_size, generator):
            xb, yb = (xs, ys) if batch.numel() == n else (xs[batch.to(x.device)], ys[batch])
            optimizer.zero_grad(set_to_none=True)
            error = layer(xb) - yb
            loss = (error**2).mean()
            torch.autograd.backward(loss)
            optimizer.step()
            total += ((error.detach() ** 2) * units).sum() / k
        value = float(total) / n
        if not math.isfinite(value):
            raise _diverged(epoch, lr)
        history.append(value)
    with torch.no_grad():
        weight = layer.weight.detach()
        bias = (
            layer.bias.detach()
            if layer.bias is not None
            else torch.zeros(k, dtype=F64, device=x.device)
        )
        coef = weight * y_scale.unsqueeze(1) / x_scale.unsqueeze(0)
        intercept = y_mean + y_scale * bias - coef @ x_mean
    return coef, intercept, history


def r2_score(y: torch.Tensor, prediction: torch.Tensor) -> float | None:
    """scikit-learn's r2_score, averaged over targets ([m, k]); a constant target scores 1
    when predicted exactly, else 0. None with fewer than 2 samples."""
    if y.shape[0] < 2:
        return None
    ss_res = ((y - prediction) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    exact = torch.where(ss_res == 0, 1.0, 0.0).to(F64)
    per_target = torch.where(ss_tot > 0, 1 - ss_res / torch.where(ss_tot > 0, ss_tot, 1), exact)
    return _finite_or_none(float(per_target.mean()))


def _linear_metrics(
    y: torch.Tensor, predictions: torch.Tensor, split: Split
) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {}
    for suffix, index in (("", split.train), ("_test", split.test)):
        if index.numel() == 0:
            metrics.update({f"r2{suffix}": None, f"mse{suffix}": None, f"mae{suffix}": None})
            continue
        truth, guess = y[index], predictions[index]
        error = guess - truth
        metrics[f"r2{suffix}"] = r2_score(truth, guess)
        metrics[f"mse{suffix}"] = _finite_or_none(float((error**2).mean()))
        metrics[f"mae{suffix}"] = _finite_or_none(float(error.abs().mean()))
    return metrics


def _pearson(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """Pearson's r of every column of x with every column of y, given centred: [d, k], NaN
    where a column is constant."""
    scale = xc.norm(dim=0).unsqueeze(1) * yc.norm(dim=0).unsqueeze(0)
    r = (xc.T @ yc) / torch.where(scale > 0, scale, 1)
    return torch.where(scale > 0, r.clamp(-1, 1), math.nan)


# --- logistic regression ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticOptions:
    """How to fit a logistic regression (the request's fields)."""

    optimizer: Literal["lbfgs", "sgd", "adam"] = "lbfgs"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    l2: float = 1e-4
    tol: float = 1e-4
    standardize: bool = True
    fit_intercept: bool = True
    threshold: float | None = None
    test_size: float = 0.0
    seed: int | None = None

    @property
    def max_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 100 if self.optimizer == "lbfgs" else 1000

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"lbfgs": 1.0, "sgd": 0.1, "adam": 0.01}[self.optimizer]


def classification_labels(table: Table) -> EncodedLabels:
    """The table's targets as class indices; a 422 for a built-in regression dataset, whose
    targets are measurements, not classes."""
    if table.task == "regression":
        raise InvalidInput(
            f"{table.name!r} is a regression dataset: its targets are measurements, not "
            "classes (use POST /regress/linear, or a classification dataset)",
            details={"dataset": table.name},
            code=ErrorCode.NOT_CLASSIFICATION,
        )
    return encode_labels(table)


def check_classes(labels: EncodedLabels, options: LogisticOptions) -> None:
    """At least two classes, at most :data:`MAX_CLASSES`; a threshold only for two."""
    count = len(labels.classes)
    if count < 2:
        raise InvalidInput(
            f"the labels hold a single class ({labels.classes[0]!r}); a classifier needs "
            "at least two"
            if count
            else "the data has no samples",
            details={"classes": list(labels.classes)},
            code=ErrorCode.SINGLE_CLASS,
        )
    if count > MAX_CLASSES:
        raise LimitExceeded("max_classes", MAX_CLASSES, count, "the labels")
    if count > 2 and options.threshold is not None:
        raise InvalidInput(
            f"threshold applies to two classes; these labels hold {count} (the most "
            "probable class wins)",
            code=ErrorCode.THRESHOLD_NOT_BINARY,
        )


def plan_logistic_fit(
    n: int, d: int, n_classes: int, options: LogisticOptions, budget: Budget
) -> None:
    """Charge a logistic fit's tensors and FLOPs (before any work)."""
    outputs = 1 if n_classes == 2 else n_classes
    _charge_data(n, d, outputs, budget)
    budget.charge_tensor(n * outputs, "the logits")
    budget.charge_tensor(n * outputs, "their gradient")
    evaluation = 6.0 * n * d * outputs + 12.0 * n * outputs
    evaluations = LBFGS_EVALS_PER_EPOCH if options.optimizer == "lbfgs" else 1
    epochs = options.max_epochs
    budget.charge_flops(
        epochs * (evaluations * evaluation + EPOCH_OVERHEAD_FLOPS) + 4.0 * n * d * outputs,
        f"{epochs:,} epochs of {options.optimizer} on {n:,} × {d:,} with {n_classes} classes",
    )


@dataclass
class LogisticFit:
    """A fitted logistic regression with what the response and the plot need."""

    weight: torch.Tensor  # [1, d] binary or [C, d], CPU float64 (on standardised x)
    bias: torch.Tensor  # [1] or [C]
    classes: list[int] | list[str]
    threshold: float | None
    mean: torch.Tensor | None  # the scaler
    scale: torch.Tensor | None
    feature_names: tuple[str, ...]
    metrics: dict[str, Any]
    split: Split
    epochs: int
    converged: bool | None
    loss_history: list[float] = field(default_factory=list)

    @property
    def multinomial(self) -> bool:
        return len(self.classes) > 2

    def model(self) -> dict[str, Any]:
        """The model as plain JSON values, for ``POST /regress/predict``."""
        binary = not self.multinomial
        return {
            "kind": "logistic",
            "classes": list(self.classes),
            "coef": self.weight[0].tolist() if binary else self.weight.tolist(),
            "intercept": float(self.bias[0]) if binary else self.bias.tolist(),
            "threshold": self.threshold,
            "scaler": None
            if self.mean is None or self.scale is None
            else {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "features": list(self.feature_names),
        }

    def params(self) -> LogisticParams:
        return LogisticParams(
            self.weight, self.bias, self.classes, self.threshold, self.mean, self.scale
        )


def _logistic_loss(
    logits: torch.Tensor, labels: torch.Tensor, binary: bool, reduction: str = "mean"
) -> torch.Tensor:
    if binary:
        return F.binary_cross_entropy_with_logits(
            logits[:, 0], labels.to(logits.dtype), reduction=reduction
        )
    return F.cross_entropy(logits, labels, reduction=reduction)


def fit_logistic(
    table: Table,
    labels: EncodedLabels,
    options: LogisticOptions,
    *,
    device: torch.device,
    deadline: Deadline,
) -> LogisticFit:
    """Fit ``table``'s features to the encoded ``labels``."""
    check_classes(labels, options)
    n_classes = len(labels.classes)
    binary = n_classes == 2
    generator = make_generator(options.seed)
    split = split_samples(table.n_samples, options.test_size, generator)
    x = table.x.index_select(0, split.train).to(device, F64)
    y = labels.indices.index_select(0, split.train).to(device)
    mean = scale = None
    if options.standardize:
        mean, scale = _standardizer(x, center=True)
        x = (x - mean) / scale
    outputs = 1 if binary else n_classes
    # Zeros to start, as scikit-learn: the loss is convex, the start only sets the path.
    weight = torch.zeros(outputs, x.shape[1], dtype=F64, device=device, requires_grad=True)
    bias = torch.zeros(outputs, dtype=F64, device=device, requires_grad=options.fit_intercept)
    parameters = [weight, bias] if options.fit_intercept else [weight]

    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = _logistic_loss(xb @ weight.T + bias, yb, binary)
        if options.l2:
            loss = loss + 0.5 * options.l2 * (weight * weight).sum()
        return loss

    if options.optimizer == "lbfgs":
        history, converged = _train_lbfgs(
            objective=objective,
            x=x,
            y=y,
            parameters=parameters,
            options=options,
            deadline=deadline,
        )
    else:
        history = _train_steps(
            objective=objective,
            x=x,
            y=y,
            parameters=parameters,
            options=options,
            generator=generator,
            deadline=deadline,
        )
        converged = None
    weight_out, bias_out = weight.detach().cpu(), bias.detach().cpu()
    if not (bool(torch.isfinite(weight_out).all()) and bool(torch.isfinite(bias_out).all())):
        raise _diverged(len(history), options.learning_rate)
    threshold = (0.5 if options.threshold is None else options.threshold) if binary else None
    fit = LogisticFit(
        weight=weight_out,
        bias=bias_out,
        classes=labels.classes,
        threshold=threshold,
        mean=None if mean is None else mean.cpu(),
        scale=None if scale is None else scale.cpu(),
        feature_names=table.feature_names,
        metrics={},
        split=split,
        epochs=len(history),
        converged=converged,
        loss_history=history,
    )
    deadline.check()
    fit.metrics = _logistic_metrics(fit.params(), table.x, labels.indices, split)
    return fit


def _train_lbfgs(
    *,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    parameters: list[torch.Tensor],
    options: LogisticOptions,
    deadline: Deadline,
) -> tuple[list[float], bool]:
    """L-BFGS, one iteration per epoch (so the deadline is checked and the loss recorded
    between iterations). Returns the loss history and whether it converged."""
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=options.learning_rate,
        max_iter=1,
        max_eval=1 + MAX_LINE_SEARCH,
        tolerance_grad=options.tol,
        tolerance_change=0.0,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    # Each step() starts by evaluating the loss where the last one ended: the line search
    # has just evaluated it there, so the last evaluation is remembered and reused.
    last: dict[str, Any] = {}

    def closure() -> torch.Tensor:
        if last and all(torch.equal(p, q) for p, q in zip(parameters, last["at"], strict=True)):
            for p, grad in zip(parameters, last["grads"], strict=True):
                p.grad = grad.clone()
            loss: torch.Tensor = last["loss"]
            return loss
        deadline.check()
        optimizer.zero_grad(set_to_none=True)
        loss = objective(x, y)
        torch.autograd.backward(loss)
        last["at"] = [p.detach().clone() for p in parameters]
        last["grads"] = [
            torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in parameters
        ]
        last["loss"] = loss.detach()
        return loss

    state = optimizer.state[parameters[0]]
    history: list[float] = []
    for _ in range(options.max_epochs):
        deadline.check()
        iterations = state.get("n_iter", 0)
        loss: torch.Tensor = optimizer.step(closure)  # type: ignore[no-untyped-call]
        value = float(loss.detach())
        if not math.isfinite(value):
            raise _diverged(len(history) + 1, options.learning_rate)
        if state.get("n_iter", 0) == iterations:
            return history, True  # the gradient is within tol: nothing left to do
        stalled = bool(history) and abs(history[-1] - value) <= STALL_TOLERANCE * max(
            1.0, abs(value)
        )
        history.append(value)
        if stalled:
            return history, True
    # The loop ended on epochs: converged only if the last point meets the tolerance.
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = objective(x, y)
        torch.autograd.backward(loss)
    gradient = max(
        (float(p.grad.abs().max()) for p in parameters if p.grad is not None and p.numel()),
        default=0.0,
    )
    return history, gradient <= options.tol


def _train_steps(
    *,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    parameters: list[torch.Tensor],
    options: LogisticOptions,
    generator: torch.Generator,
    deadline: Deadline,
) -> list[float]:
    lr = options.learning_rate
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(parameters, lr=lr)
        if options.optimizer == "sgd"
        else torch.optim.Adam(parameters, lr=lr)
    )
    n = x.shape[0]
    history: list[float] = []
    for epoch in range(1, options.max_epochs + 1):
        deadline.check()
        total = torch.zeros((), dtype=F64, device=x.device)
        for batch in _batches(n, options.batch_size, generator):
            on_device = batch.to(x.device)
            xb, yb = (x, y) if batch.numel() == n else (x[on_device], y[on_device])
            optimizer.zero_grad(set_to_none=True)
            loss = objective(xb, yb)
            torch.autograd.backward(loss)
            optimizer.step()
            total += loss.detach() * batch.numel()
        value = float(total) / n
        if not math.isfinite(value):
            raise _diverged(epoch, lr)
        history.append(value)
    return history


def _logistic_metrics(
    params: LogisticParams, x: torch.Tensor, labels: torch.Tensor, split: Split
) -> dict[str, Any]:
    logits = params.logits(x.to(F64))
    predicted = params.decide(logits)
    binary = len(params.classes) == 2
    metrics: dict[str, Any] = {}
    for suffix, index in (("", split.train), ("_test", split.test)):
        if index.numel() == 0:
            for name in ("accuracy", "log_loss", "confusion_matrix", "precision", "recall"):
                metrics[name + suffix] = None
            continue
        truth, guess = labels[index], predicted[index]
        loss = float(_logistic_loss(logits[index], truth, binary))
        matrix = confusion_matrix(truth, guess, len(params.classes))
        metrics["accuracy" + suffix] = float((truth == guess).to(F64).mean())
        metrics["log_loss" + suffix] = _finite_or_none(loss)
        metrics["confusion_matrix" + suffix] = matrix.tolist()
        metrics["precision" + suffix] = _ratios(matrix.diagonal(), matrix.sum(0))
        metrics["recall" + suffix] = _ratios(matrix.diagonal(), matrix.sum(1))
    return metrics


def confusion_matrix(truth: torch.Tensor, guess: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C, C] counts: row i, column j holds the samples of class i predicted as j."""
    counts = torch.bincount(truth * n_classes + guess, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _ratios(numerator: torch.Tensor, denominator: torch.Tensor) -> list[float | None]:
    return [
        None if int(den) == 0 else int(num) / int(den)
        for num, den in zip(numerator.tolist(), denominator.tolist(), strict=True)
    ]


# --- models and predictions ------------------------------------------------------------------


def _model_error(message: str, **details: object) -> InvalidInput:
    return InvalidInput(f"model: {message}", details=dict(details), code=ErrorCode.INVALID_MODEL)


def _vector(values: Sequence[float], where: str) -> torch.Tensor:
    tensor = torch.tensor(values, dtype=F64)
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
        return int(self.coef.shape[1])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
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
        return int(self.weight.shape[1])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
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
    x = x.to(F64)
    if not bool(torch.isfinite(x).all()):
        raise InvalidInput("x holds NaN or infinite values", code=ErrorCode.NON_FINITE)
    return x


def plan_predict(n: int, d: int, outputs: int, budget: Budget) -> None:
    """Charge a prediction's tensors and FLOPs."""
    budget.charge_tensor(n * d, "x (float64)")
    budget.charge_tensor(n * outputs, "the predictions")
    budget.charge_flops(2.0 * n * d * outputs + 8.0 * n * outputs, "the predictions")
