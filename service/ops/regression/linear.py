"""``POST /regress/linear``: a linear regression, by least squares or by gradient descent.

* ``lstsq``: the least-squares solution of the centred data, ``torch.linalg.lstsq`` with
  LAPACK's SVD-based ``gelsd`` driver in float64 on the CPU (an explicit SVD with the same
  cut-off on CUDA, whose ``lstsq`` only has a QR driver that assumes full rank). So an
  ill-conditioned or rank-deficient problem gets the minimum-norm solution scikit-learn's
  ``LinearRegression`` computes, never the normal equations' squared condition number.
* ``gd``: ``nn.Linear`` trained on the MSE by SGD or Adam, as a tutorial writes it, on
  standardised x and y; the weights are converted back to the original units.

The fit is planned first (:func:`plan_linear_fit` charges its tensors and FLOPs to a
budget); training checks the deadline every epoch, and its random draws (the split, the
initial weights, mini-batch orders) come from a private generator seeded by ``seed``.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from service.errors import ErrorCode, InvalidInput, OpError
from service.limits import Budget, Deadline
from service.memory import allocation_failed
from service.ops.context import make_generator
from service.ops.data.datasets import Table
from service.ops.regression.metrics import (
    finite_or_none,
    linear_metrics,
    pearson,
    pearson_of,
    strength,
)
from service.ops.regression.split import Split, minibatches, split_samples
from service.ops.regression.training import (
    EPOCH_OVERHEAD_FLOPS,
    F64,
    X_PASSES,
    charge_answer,
    charge_data,
    charge_minibatch_steps,
    diverged,
    standardizer,
)
from service.ops.threads import cores

CORRELATION_OBJECTS = 5
"""Objects of one entry of ``correlations``: a dict of a feature, a target, r and a word."""


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
        """``lr``, or the optimizer's default: 0.1 for SGD, 0.01 for Adam."""
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
    """Charge a linear fit's tensors, FLOPs (in float64), passes over the data, optimizer
    steps and the answer's numbers and names (before any work)."""
    charge_data(n, d, k, budget)
    budget.charge_tensor(n * d, "the centred copy of x")
    budget.charge_tensor(d * k, "the correlations")
    metrics = 8.0 * n * d * k
    if options.method == "lstsq":
        # Householder QR of [n, d], the SVD of the [d, d] factor, and Qᵀb.
        flops = 4.0 * n * d * d + 22.0 * d**3 + 4.0 * n * d * k + metrics
        what = f"a least-squares fit of {n:,} × {d:,}"
        budget.charge_flops(flops, what, dtype=F64)
        # Centring, the factorisation's reflections (half of them matrix-vector products)
        # and the predictions pass over x several times.
        budget.charge_elementwise(2.0 * X_PASSES * n * d + 4.0 * n * k, what)
        # The QR's d reflections come one after another, each a pass over the rows: the
        # grain by which the worker picks one thread (and the QR then goes by blocks).
        budget.count_serial_steps(d)
    else:
        per_epoch = 6.0 * n * d * k + 8.0 * n * k + EPOCH_OVERHEAD_FLOPS
        epochs = options.epochs
        what = f"{epochs:,} epochs of gradient descent on {n:,} × {d:,}"
        budget.charge_flops(epochs * per_epoch + metrics, what, dtype=F64)
        budget.charge_tensor(n * d, "the standardised copy of x")
        # The weights, their gradient and (Adam) its two moments.
        for _ in range(2 if options.optimizer == "sgd" else 4):
            budget.charge_tensor(d * k, "the weights or an optimizer's state")
        charge_minibatch_steps(
            budget,
            epochs=epochs,
            n=n,
            batch_size=options.batch_size,
            d=d,
            outputs=k,
            what=what,
        )
    history = options.epochs if options.method == "gd" else 0
    charge_answer(
        budget,
        numbers=k * d + k + 6 + history + CORRELATION_OBJECTS * d * k,
        names=d + k,
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
        """Pearson's r of every feature with every target, and the tutorial's word for it
        (None for a constant column)."""
        rows = []
        for i, feature in enumerate(self.feature_names):
            for j, target in enumerate(self.target_names):
                r = finite_or_none(float(self.correlations[i, j]))
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
        return finite_or_none(float(self.correlations[0, 0]))


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
    x_mean, y_mean = x_train.mean(0), y_train.mean(0)
    x_centred, y_centred = x_train - x_mean, y_train - y_mean
    history = reduction = None
    if options.method == "lstsq":
        coef, intercept, reduction = _lstsq_fit(
            x_train, y_train, options, centred=(x_centred, y_centred), means=(x_mean, y_mean)
        )
    else:
        coef, intercept, history = _gd_fit(x_train, y_train, options, generator, deadline)
    if reduction is not None:  # of the centred x: its correlations without another pass
        correlations = pearson_of(reduction.products(), reduction.column_norms(), y_centred)
    else:
        correlations = pearson(x_centred, y_centred)
    coef, intercept = coef.cpu(), intercept.cpu()
    if not (bool(torch.isfinite(coef).all()) and bool(torch.isfinite(intercept).all())):
        raise InvalidInput(
            "the fit has non-finite coefficients: the data's values are too large for "
            "float64 arithmetic; rescale them",
            code=ErrorCode.NON_FINITE_FIT,
        )
    deadline.check()
    predictions = table.x.to(F64) @ coef.T + intercept
    return LinearFit(
        coef=coef,
        intercept=intercept,
        single_target=single,
        feature_names=table.feature_names,
        target_names=table.target_names,
        metrics=linear_metrics(y2, predictions, split),
        correlations=correlations.cpu(),
        split=split,
        predictions=predictions,
        loss_history=history,
        epochs=None if history is None else len(history),
    )


# --- least squares ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reduction:
    """``a`` [n, d] and ``b`` [n, k] reduced by a Householder QR ``a = QR``: R's first d rows
    (``triangle``) and those of ``Qᵀb`` (``projected``). Q has orthonormal columns, so each
    column of R has the norm of ``a``'s, and ``Rᵀ Qᵀb`` is ``aᵀb``: to rounding of the
    order of each column's own norm (Householder QR is backward stable column by column)."""

    triangle: Tensor
    projected: Tensor

    def products(self) -> Tensor:
        """``aᵀb`` [d, k]."""
        return self.triangle.T @ self.projected

    def column_norms(self) -> Tensor:
        """The norm of each column of ``a`` [d]."""
        norms: Tensor = torch.linalg.vector_norm(self.triangle, dim=0)
        return norms


def lstsq(a: torch.Tensor, b: torch.Tensor, rcond: float | None = None) -> torch.Tensor:
    """The minimum-norm least-squares solution of ``a @ s ≈ b`` ([n, d], [n, k] → [d, k]).

    Singular values below ``rcond`` × the largest count as zero; default machine precision
    × max(n, d), LAPACK's and torch's default.
    """
    return solve_lstsq(a, b, rcond)[0]


def solve_lstsq(
    a: torch.Tensor, b: torch.Tensor, rcond: float | None = None
) -> tuple[Tensor, Reduction | None]:
    """:func:`lstsq`, and the QR reduction of a tall ``a`` when it was solved through one
    (``None`` otherwise)."""
    try:
        if a.device.type == "cpu":
            return _gelsd(a, b, rcond)
        # CUDA's lstsq has only the QR driver, which assumes full rank: an SVD instead.
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
    except RuntimeError as exc:  # LAPACK's SVD did not converge
        if allocation_failed(exc):
            raise
        raise OpError(f"least squares: {str(exc).splitlines()[0]}") from exc
    cutoff = rcond if rcond is not None else torch.finfo(a.dtype).eps * max(a.shape)
    keep = s > cutoff * s[0] if s.numel() else s > 0
    inverse = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), 0.0)
    result: torch.Tensor = vh.mT @ (inverse.unsqueeze(1) * (u.mT @ b))
    return result, None


TALL = 2
"""A matrix with this many times more rows than columns is first reduced by QR (on the CPU)."""

BLOCKS_MIN_FLOPS = 3e7
"""A QR of at least this many FLOPs (``4nd²``, some milliseconds on one thread) goes by
blocks side by side; a smaller one would gain less than handing a block to another thread
costs (a few hundred µs on a small VM)."""


def _gelsd(
    a: torch.Tensor, b: torch.Tensor, rcond: float | None
) -> tuple[Tensor, Reduction | None]:
    """LAPACK's ``gelsd``. A tall ``a`` is first reduced to its [d, d] triangle by a
    Householder QR (``a = QR``: ``‖as − b‖`` is ``‖Rs − Qᵀb‖`` plus a constant, and R has
    a's singular values), which ``gelsd`` does inside as well but, called through torch on
    a 20000×40 matrix, in about 1.6× the time. Run on one of torch's threads with cores to
    spare (:func:`~service.ops.threads.cores`), that QR goes by blocks of rows side by side
    (:func:`_reduce_by_blocks`)."""
    n, d = a.shape
    if n < TALL * d or d == 0:
        solution: torch.Tensor = torch.linalg.lstsq(a, b, rcond=rcond, driver="gelsd").solution
        return solution, None
    cutoff = rcond if rcond is not None else torch.finfo(a.dtype).eps * n  # LAPACK's default
    blocks = min(cores(), n // (TALL * d))
    if blocks > 1 and 4.0 * n * d * d >= BLOCKS_MIN_FLOPS:
        a, b = _reduce_by_blocks(a, b, blocks)
    reduction = Reduction(*_qr_reduce((a, b)))
    small: torch.Tensor = torch.linalg.lstsq(
        reduction.triangle, reduction.projected, rcond=cutoff, driver="gelsd"
    ).solution
    return small, reduction


def _qr_reduce(piece: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Rows ``a`` [m, d] and targets ``b`` reduced by a Householder QR ``a = QR`` to R's
    first d rows and those of ``Qᵀb``: ``‖as − b‖`` is ``‖Rs − Qᵀb‖`` plus a constant."""
    a, b = piece
    d = a.shape[1]
    reflectors, tau = torch.geqrf(a)
    projected = torch.ormqr(reflectors, tau, b, left=True, transpose=True)[:d]
    return reflectors[:d].triu(), projected


def _reduce_by_blocks(a: torch.Tensor, b: torch.Tensor, blocks: int) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` reduced to ``blocks`` stacked [d, d] triangles and their ``Qᵀb``
    (a tall-skinny QR: each block of rows by its own Householder QR, the blocks side by side
    on threads, each on one of torch's). ``‖as − b‖`` differs from ``‖Rs − Qᵀb‖`` of the
    stacked pieces by a constant, and they have ``a``'s singular values, so the solution is
    the same. The blocks wait for nothing but a core: a block on a busy core delays only
    itself, where one QR on two threads waits at each of its ``d`` steps for both."""
    pieces = list(zip(a.tensor_split(blocks), b.tensor_split(blocks), strict=True))
    pool = _block_pool(cores() - 1)
    others = [pool.submit(_qr_reduce, piece) for piece in pieces[1:]]
    reduced = [_qr_reduce(pieces[0]), *(future.result() for future in others)]
    return torch.cat([r for r, _ in reduced]), torch.cat([p for _, p in reduced])


@functools.cache
def _block_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` threads (the cores past the caller's) for the
    blocks past the first, which the calling thread reduces itself. A thread's first torch
    call sets up its own state, about a millisecond: the threads are kept, not made anew
    per fit, and started as blocks first need them."""
    return ThreadPoolExecutor(threads, thread_name_prefix="qr-block")


def _lstsq_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    options: LinearOptions,
    *,
    centred: tuple[torch.Tensor, torch.Tensor],
    means: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, Reduction | None]:
    """The coefficients [k, d] and intercepts [k], and the QR reduction of the centred x
    when the solution went through one."""
    fit_intercept, rcond = options.fit_intercept, options.rcond
    # Centring, as scikit-learn does, separates the intercept from the slopes: the
    # intercept column would otherwise add to the condition number.
    if fit_intercept:
        solution, reduction = solve_lstsq(*centred, rcond)
        x_mean, y_mean = means
        return solution.T, y_mean - x_mean @ solution, reduction
    solution = lstsq(x, y, rcond)
    return solution.T, torch.zeros(y.shape[1], dtype=F64, device=y.device), None


# --- gradient descent ------------------------------------------------------------------------


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
        x_mean, x_scale = standardizer(x, options.fit_intercept)
        y_mean, y_scale = standardizer(y, options.fit_intercept)
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
        for batch in minibatches(n, options.batch_size, generator):
            xb, yb = (xs, ys) if batch.numel() == n else (xs[batch.to(x.device)], ys[batch])
            optimizer.zero_grad(set_to_none=True)
            error = layer(xb) - yb
            loss = (error**2).mean()
            torch.autograd.backward(loss)
            optimizer.step()
            total += ((error.detach() ** 2) * units).sum() / k
        value = float(total) / n
        if not math.isfinite(value):
            raise diverged(epoch, lr)
        history.append(value)
        deadline.progress(epoch, options.epochs, "epoch", loss=value)
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
