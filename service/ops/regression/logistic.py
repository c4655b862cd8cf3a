"""``POST /regress/logistic``: a logistic regression, binary or multinomial.

A linear score, then the sigmoid (two classes) or the softmax (more); the mean log loss plus
``l2/2·‖W‖²``; L-BFGS with a strong-Wolfe line search by default (as scikit-learn's default
solver), SGD or Adam on request, on standardised features (the scaler is part of the model).

The fit is planned first (:func:`plan_logistic_fit` charges its tensors and FLOPs to a
budget); training checks the deadline every epoch, and its random draws (the split,
mini-batch orders) come from a private generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from service.errors import ErrorCode, InvalidInput, LimitExceeded, clip
from service.limits import Budget, Deadline
from service.ops.context import make_generator
from service.ops.data.datasets import EncodedLabels, Table, encode_labels
from service.ops.regression.metrics import log_loss, logistic_metrics
from service.ops.regression.params import LogisticParams
from service.ops.regression.split import Split, minibatches, split_samples
from service.ops.regression.training import (
    EPOCH_OVERHEAD_FLOPS,
    EVALUATION_SECONDS,
    F64,
    charge_answer,
    charge_data,
    charge_evaluations,
    charge_minibatch_steps,
    diverged,
    standardizer,
)

LBFGS_EVALS_PER_EPOCH = 2
"""Loss evaluations charged per L-BFGS iteration, on average: the strong-Wolfe line search
mostly accepts its first step. The fit never evaluates more than it was charged for
(:func:`lbfgs_evaluations`): a run of long line searches that spends them ends the fit."""
MAX_LINE_SEARCH = 25
"""Evaluations one strong-Wolfe line search may make (torch's ``max_ls``)."""
LBFGS_HISTORY = 10
"""Corrections L-BFGS keeps; its two-loop recursion passes over each twice per iteration."""
STALL_TOLERANCE = 1e-12
"""Relative change of the loss between L-BFGS iterations below which it stopped moving."""


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
        """``epochs``, or the optimizer's default: 100 L-BFGS iterations, 1000 epochs."""
        if self.epochs is not None:
            return self.epochs
        return 100 if self.optimizer == "lbfgs" else 1000

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default: 1.0 (L-BFGS's step scale), 0.1, 0.01."""
        if self.lr is not None:
            return self.lr
        return {"lbfgs": 1.0, "sgd": 0.1, "adam": 0.01}[self.optimizer]


def classification_labels(
    table: Table, *, max_classes: int | None = None, budget: Budget | None = None
) -> EncodedLabels:
    """The table's targets as class indices; a 422 for a built-in regression dataset, whose
    targets are measurements, not classes. More than ``max_classes`` classes is a 413 before
    they are listed; the labels and classes are charged to ``budget``."""
    if table.task == "regression":
        raise InvalidInput(
            f"{table.name!r} is a regression dataset: its targets are measurements, not "
            "classes (use POST /regress/linear, or a classification dataset)",
            details={"dataset": table.name},
            code=ErrorCode.NOT_CLASSIFICATION,
        )
    return encode_labels(table, max_classes=max_classes, budget=budget)


def check_classes(labels: EncodedLabels, options: LogisticOptions, max_classes: int) -> None:
    """At least two classes, at most ``max_classes`` (the ``max_classes`` limit); a threshold
    only for two."""
    count = len(labels.classes)
    if count < 2:
        raise InvalidInput(
            f"the labels hold a single class ({_quoted(labels.classes[0])!r}); a classifier "
            "needs at least two"
            if count
            else "the data has no samples",
            details={"classes": [_quoted(label) for label in labels.classes]},
            code=ErrorCode.SINGLE_CLASS,
        )
    if count > max_classes:
        raise LimitExceeded("max_classes", max_classes, count, "the labels")
    if count > 2 and options.threshold is not None:
        raise InvalidInput(
            f"threshold applies to two classes; these labels hold {count} (the most "
            "probable class wins)",
            code=ErrorCode.THRESHOLD_NOT_BINARY,
        )


def check_training_classes(labels: EncodedLabels, split: Split, options: LogisticOptions) -> None:
    """A 422 ``single_class`` when the training split holds one class, though the labels
    hold more (:func:`check_classes` saw them all): a fit on it would learn nothing."""
    if split.test.numel() == 0:
        return  # every sample trains: check_classes has counted them
    train = labels.indices.index_select(0, split.train)
    present = torch.bincount(train, minlength=len(labels.classes)).nonzero().flatten()
    if present.numel() >= 2:
        return
    only = _quoted(labels.classes[int(present[0])])
    seed = "" if options.seed is None else f" and seed {options.seed}"
    # No stratified split to suggest: test_size and seed are what the request can change.
    raise InvalidInput(
        f"the training split holds a single class ({only!r}) of the labels' "
        f"{len(labels.classes)}: with test_size {options.test_size:g}{seed}, all "
        f"{split.train.numel()} training samples are of that class; a classifier needs at "
        "least two (try a smaller test_size or another seed)",
        details={
            "classes": [only],
            "n_classes": len(labels.classes),
            "n_train": int(split.train.numel()),
            "test_size": options.test_size,
            "seed": options.seed,
        },
        code=ErrorCode.SINGLE_CLASS,
    )


def _quoted(label: int | str) -> int | str:
    """A class label as an error may quote it: a text label clipped (a CSV cell can be
    megabytes long)."""
    return clip(label) if isinstance(label, str) else label


def lbfgs_evaluations(epochs: int) -> int:
    """Loss-and-gradient evaluations an L-BFGS fit of ``epochs`` iterations may make in all:
    :data:`LBFGS_EVALS_PER_EPOCH` per iteration, one full line search on top, the first
    evaluation and the final check of the gradient."""
    return 2 + epochs * LBFGS_EVALS_PER_EPOCH + MAX_LINE_SEARCH


def plan_logistic_fit(
    n: int, d: int, n_classes: int, options: LogisticOptions, budget: Budget
) -> None:
    """Charge a logistic fit's tensors, FLOPs (in float64), loss evaluations or optimizer
    steps, and the answer's numbers and names (confusion matrices: classes² each), before
    any work."""
    outputs = 1 if n_classes == 2 else n_classes
    charge_data(n, d, outputs, budget)
    budget.charge_tensor(n * d, "x standardised for the metrics")
    budget.charge_tensor(n * outputs, "the logits")
    budget.charge_tensor(n * outputs, "their gradient")
    # The weights and their gradient; L-BFGS keeps two vectors per correction of its
    # history and a few more (the direction, the previous gradient, the cached evaluation);
    # Adam two moments.
    vectors = {"lbfgs": 2 * LBFGS_HISTORY + 6, "sgd": 2, "adam": 4}[options.optimizer]
    for _ in range(vectors):
        budget.charge_tensor(outputs * d, "the weights or an optimizer's state")
    evaluation = 6.0 * n * d * outputs + 12.0 * n * outputs
    epochs = options.max_epochs
    what = f"{epochs:,} epochs of {options.optimizer} on {n:,} × {d:,} with {n_classes} classes"
    if options.optimizer == "lbfgs":
        evaluations = lbfgs_evaluations(epochs)
        recursion = 4.0 * LBFGS_HISTORY * d * outputs
        flops = evaluations * evaluation + epochs * (EPOCH_OVERHEAD_FLOPS + recursion)
        budget.charge_flops(flops + 4.0 * n * d * outputs, what, dtype=F64)
        charge_evaluations(
            budget,
            evaluations,
            samples=n,
            d=d,
            outputs=outputs,
            seconds=EVALUATION_SECONDS,
            what=f"{evaluations:,} loss evaluations of L-BFGS",
        )
    else:
        budget.charge_flops(
            epochs * (evaluation + EPOCH_OVERHEAD_FLOPS) + 4.0 * n * d * outputs, what, dtype=F64
        )
        charge_minibatch_steps(
            budget,
            epochs=epochs,
            n=n,
            batch_size=options.batch_size,
            d=d,
            outputs=outputs,
            what=what,
        )
    splits = 2 if options.test_size > 0 else 1
    per_split = n_classes * n_classes + 2 * n_classes + 2
    charge_answer(
        budget,
        numbers=outputs * d + outputs + 2 * d + epochs + splits * per_split,
        names=d + n_classes,
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
        """Whether there are more than two classes (a softmax, not a sigmoid)."""
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
        """The fitted model, ready to predict."""
        return LogisticParams(
            self.weight, self.bias, self.classes, self.threshold, self.mean, self.scale
        )


def fit_logistic(
    table: Table,
    labels: EncodedLabels,
    options: LogisticOptions,
    *,
    device: torch.device,
    deadline: Deadline,
    max_classes: int,
) -> LogisticFit:
    """Fit ``table``'s features to the encoded ``labels`` (refused over ``max_classes``)."""
    check_classes(labels, options, max_classes)
    n_classes = len(labels.classes)
    binary = n_classes == 2
    generator = make_generator(options.seed)
    split = split_samples(table.n_samples, options.test_size, generator)
    check_training_classes(labels, split, options)
    x = table.x.index_select(0, split.train).to(device, F64)
    y = labels.indices.index_select(0, split.train).to(device)
    mean = scale = None
    if options.standardize:
        mean, scale = standardizer(x, center=True)
        x = (x - mean) / scale
    outputs = 1 if binary else n_classes
    # Zeros to start, as scikit-learn: the loss is convex, the start only sets the path.
    weight = torch.zeros(outputs, x.shape[1], dtype=F64, device=device, requires_grad=True)
    bias = torch.zeros(outputs, dtype=F64, device=device, requires_grad=options.fit_intercept)
    parameters = [weight, bias] if options.fit_intercept else [weight]

    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = log_loss(xb @ weight.T + bias, yb, binary)
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
        if history:  # it may stop before max_epochs: the last iteration, whatever its time
            deadline.progress(
                len(history), options.max_epochs, "epoch", final=True, loss=history[-1]
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
        raise diverged(len(history), options.learning_rate)
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
    fit.metrics = logistic_metrics(fit.params(), table.x, labels.indices, split)
    return fit


class _EvaluationsSpent(Exception):
    """L-BFGS has made every loss evaluation its plan charged."""


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
    # The evaluations the plan charged, less the final check of the gradient.
    left = [lbfgs_evaluations(options.max_epochs) - 1]

    def closure() -> torch.Tensor:
        if last and all(torch.equal(p, q) for p, q in zip(parameters, last["at"], strict=True)):
            for p, grad in zip(parameters, last["grads"], strict=True):
                p.grad = grad.clone()
            loss: torch.Tensor = last["loss"]
            return loss
        deadline.check()
        if left[0] <= 0:
            raise _EvaluationsSpent
        left[0] -= 1
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
        start = [p.detach().clone() for p in parameters]
        try:
            loss: torch.Tensor = optimizer.step(closure)  # type: ignore[no-untyped-call]
        except _EvaluationsSpent:
            # Line searches used up what was charged: back to where this iteration began
            # (the line search left the parameters at its last trial), and stop there.
            with torch.no_grad():
                for p, began in zip(parameters, start, strict=True):
                    p.copy_(began)
            break
        value = float(loss.detach())
        if not math.isfinite(value):
            raise diverged(len(history) + 1, options.learning_rate)
        if state.get("n_iter", 0) == iterations:
            return history, True  # the gradient is within tol: nothing left to do
        stalled = bool(history) and abs(history[-1] - value) <= STALL_TOLERANCE * max(
            1.0, abs(value)
        )
        history.append(value)
        deadline.progress(len(history), options.max_epochs, "epoch", loss=value)
        if stalled:
            return history, True
    # The loop ended on epochs (or on evaluations): converged only if the last point meets
    # the tolerance.
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
        for batch in minibatches(n, options.batch_size, generator):
            on_device = batch.to(x.device)
            xb, yb = (x, y) if batch.numel() == n else (x[on_device], y[on_device])
            optimizer.zero_grad(set_to_none=True)
            loss = objective(xb, yb)
            torch.autograd.backward(loss)
            optimizer.step()
            total += loss.detach() * batch.numel()
        value = float(total) / n
        if not math.isfinite(value):
            raise diverged(epoch, lr)
        history.append(value)
        deadline.progress(epoch, options.max_epochs, "epoch", loss=value)
    return history
