"""``POST /regress/linear``, ``/regress/logistic`` and ``/regress/predict`` (chapters 2 and 4).

A fit returns its ``model`` as plain JSON numbers (float64 values, written exactly): send it
back unchanged to ``POST /regress/predict``. The service keeps nothing between requests.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    StrictModel,
    TensorOut,
    given,
    needs,
    none_given,
    when_value,
)
from schemas.datasets import MAX_NAME_LENGTH, DataRequest, Samples

MAX_EPOCHS = 10_000
MAX_FEATURES = 1 << 20
MAX_CLASSES = 1000
MAX_BATCH = 2**31 - 1

Strength = Literal["weak", "moderate", "strong"]
Format = Literal["json", "png"]

_TEST_SIZE_DOC = (
    "Fraction of the samples held out for testing, drawn by a seeded permutation (`seed`): "
    "ceil(test_size·n) samples. 0 (default): no split, every sample trains."
)
_FORMAT_DOC_LINEAR = (
    "`json`: the model and metrics. `png`: a picture of the fit: for one feature the data "
    "(feature on x, target on y; test samples as green triangles) and the fitted line in red; "
    "for several features the predicted against the actual values; with `gd` a second panel "
    "with the loss curve."
)
_FORMAT_DOC_LOGISTIC = (
    "`json`: the model and metrics. `png`: a picture: for two features the samples coloured "
    "by class over the predicted class regions (binary: the line where P(class 1) = "
    "threshold), beside the loss curve; otherwise the loss curve."
)
_EPOCHS_DOC = (
    "Passes over the training data. `gd`, `sgd`, `adam`: default 1000. `lbfgs`: the most "
    "L-BFGS iterations, default 100 (it stops sooner once converged)."
)
_LR_DOC = "Learning rate. Default: 0.1 for `sgd`, 0.01 for `adam`, 1.0 for `lbfgs` (step scale)."
_BATCH_DOC = (
    "Samples per mini-batch, reshuffled every epoch (seeded); default: the whole training "
    "set in one batch (full-batch gradient descent)."
)

Numbers = Annotated[list[float], Field(max_length=MAX_FEATURES, fail_fast=True)]
"""A list of a model's numbers, which stops at its first invalid item: a megabyte of invalid
coefficients made 200,000 errors."""
CoefList = Numbers | Annotated[list[Numbers], Field(max_length=MAX_FEATURES, fail_fast=True)]
Names = Annotated[
    list[Annotated[str, Field(max_length=MAX_NAME_LENGTH)]],
    Field(max_length=MAX_FEATURES, fail_fast=True),
]

# --- models, as fits return them and predict takes them -----------------------------------


class LinearModel(StrictModel):
    """A fitted linear regression: y = x·coefᵀ + intercept."""

    kind: Literal["linear"] = Field(description="Always `linear`.", examples=["linear"])
    coef: CoefList = Field(
        description="The weights: [n_features] for one target, [n_targets][n_features] for "
        "several (as scikit-learn's `coef_`), in the original units of x and y.",
        examples=[[17.9]],
    )
    intercept: float | Numbers = Field(
        description="The intercept: a number for one target, [n_targets] for several "
        "(0 without `fit_intercept`).",
        examples=[5.5],
    )
    features: Names = Field(
        min_length=1,
        description="The feature names, in the order of the columns of x.",
        examples=[["hours"]],
    )
    targets: Names | None = Field(
        default=None,
        description="The target names (one, or one per row of a 2-D coef).",
        examples=[["score"]],
    )


class Scaler(StrictModel):
    """Standardisation applied to x before the weights: (x − mean) / scale."""

    mean: Numbers = Field(description="Training mean of each feature.", examples=[[2.7]])
    scale: Numbers = Field(
        description="Training standard deviation of each feature (1 for a constant one).",
        examples=[[1.5]],
    )


class LogisticModel(StrictModel):
    """A fitted logistic regression: binary (sigmoid) or multinomial (softmax)."""

    kind: Literal["logistic"] = Field(description="Always `logistic`.", examples=["logistic"])
    classes: (
        Annotated[list[Int], Field(max_length=MAX_CLASSES, fail_fast=True)]
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_NAME_LENGTH)]],
            Field(max_length=MAX_CLASSES, fail_fast=True),
        ]
    ) = Field(
        min_length=2,
        description="The class labels, sorted; class i is `classes[i]`. Binary: `classes[1]` "
        "is the positive class.",
        examples=[[0, 1]],
    )
    coef: CoefList = Field(
        description="Binary: [n_features], the weights of the logit of P(classes[1]). "
        "Multinomial: [n_classes][n_features], one row of softmax logits' weights per class. "
        "They apply to the standardised features when `scaler` is given.",
        examples=[[1.2, -0.7]],
    )
    intercept: float | Numbers = Field(
        description="Binary: a number; multinomial: [n_classes].", examples=[0.1]
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Binary: a sample is `classes[1]` when P(classes[1]) > threshold, else "
        "`classes[0]`. Null for multinomial (the most probable class wins).",
        examples=[0.5],
    )
    scaler: Scaler | None = Field(
        default=None,
        description="The standardisation fitted on the training data, applied to x before "
        "the weights; null when `standardize` was false.",
    )
    features: Names = Field(
        min_length=1,
        description="The feature names, in the order of the columns of x.",
        examples=[["x0", "x1"]],
    )


# --- POST /regress/linear --------------------------------------------------------------------

LINEAR_EXAMPLE: dict[str, Any] = {"dataset": "exam"}
_GD_ONLY = ("optimizer", "epochs", "lr", "batch_size", "standardize")
_METHODS = ("lstsq", "gd")
"""The options of `method: gd` alone."""


class LinearRegressionRequest(DataRequest):
    """A linear regression (chapter 2): `lstsq`, the closed form, or `gd`, an `nn.Linear`
    trained with MSE loss by SGD or Adam."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        needs("x", given("y")),
        when_value("method", ("lstsq",), none_given(*_GD_ONLY), choices=_METHODS, default="lstsq"),
        when_value("method", ("gd",), none_given("rcond"), choices=_METHODS, default="lstsq"),
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                LINEAR_EXAMPLE,
                {"dataset": "exam", "method": "gd", "epochs": 500, "lr": 0.1, "seed": 0},
                {"dataset": "diabetes", "test_size": 0.2, "seed": 0},
                {"x": [0.5, 1.0, 1.5, 2.0], "y": [10.0, 22.0, 20.0, 33.0], "format": "png"},
            ]
        }
    }

    method: Literal["lstsq", "gd"] = Field(
        default="lstsq",
        description="`lstsq`: the least-squares solution in closed form "
        "(`torch.linalg.lstsq`, SVD-based, in float64: sound for ill-conditioned data, the "
        "minimum-norm solution for rank-deficient data, as scikit-learn's LinearRegression). "
        "`gd`: `nn.Linear` trained by `optimizer` on the MSE, as a tutorial writes it.",
        examples=["lstsq"],
    )
    fit_intercept: bool = Field(
        default=True, description="Fit an intercept (false: the line passes through 0)."
    )
    test_size: float = Field(default=0.0, ge=0, lt=1, description=_TEST_SIZE_DOC, examples=[0.2])
    rcond: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="`lstsq` only: singular values below rcond × the largest count as zero. "
        "Default: machine precision × max(n_samples, n_features), as LAPACK, numpy and torch "
        "(scikit-learn ≥ 1.9's LinearRegression uses its `tol`, 1e-6).",
        examples=[1e-6],
    )
    optimizer: Literal["sgd", "adam"] | None = Field(
        default=None, description="`gd` only: `sgd` (default) or `adam`.", examples=["sgd"]
    )
    epochs: Int | None = Field(
        default=None,
        ge=1,
        le=MAX_EPOCHS,
        description="`gd` only: passes over the training data (default 1000).",
        examples=[1000],
    )
    lr: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="`gd` only: the learning rate (default 0.1 for `sgd`, 0.01 for `adam`).",
        examples=[0.1],
    )
    batch_size: Int | None = Field(
        default=None, ge=1, le=MAX_BATCH, description="`gd` only: " + _BATCH_DOC
    )
    standardize: bool | None = Field(
        default=None,
        description="`gd` only (default true): train on standardised x and y (zero mean, "
        "unit variance), which lets one learning rate suit any units; the returned "
        "coefficients are converted back to the original units. Without it, large "
        "features may make the training diverge (a 422 `diverged`).",
    )
    format: Format = Field(default="json", description=_FORMAT_DOC_LINEAR)

    @model_validator(mode="after")
    def _options_of_the_method(self) -> LinearRegressionRequest:
        if self.method == "lstsq":
            present = [name for name in _GD_ONLY if getattr(self, name) is not None]
            if present:
                raise ValueError(f"{', '.join(present)}: only for method `gd`")
        elif self.rcond is not None:
            raise ValueError("rcond: only for method `lstsq`")
        return self


class LinearMetrics(BaseModel):
    """Goodness of fit on the training samples and, with a split, on the test samples."""

    r2: float | None = Field(
        description="Coefficient of determination on the training set (scikit-learn's "
        "r2_score; averaged over targets); null with fewer than 2 samples.",
        examples=[0.83],
    )
    mse: float | None = Field(description="Mean squared error on the training set.")
    mae: float | None = Field(description="Mean absolute error on the training set.")
    r2_test: float | None = Field(description="r2 on the test set; null without a split.")
    mse_test: float | None = Field(description="MSE on the test set; null without a split.")
    mae_test: float | None = Field(description="MAE on the test set; null without a split.")


class FeatureCorrelation(BaseModel):
    """Pearson's r between one feature and one target, on the training samples."""

    feature: str = Field(description="The feature's name.", examples=["hours"])
    target: str = Field(description="The target's name.", examples=["score"])
    r: float | None = Field(
        description="Pearson's correlation coefficient; null when either is constant.",
        examples=[0.92],
    )
    strength: Strength | None = Field(
        description="`weak` for |r| < 0.3, `moderate` for 0.3 ≤ |r| < 0.6, `strong` above.",
        examples=["strong"],
    )


class LinearRegressionResponse(ComputeResponse):
    """The fitted model, its metrics and, for one feature, the correlation's strength."""

    model: LinearModel = Field(description="The model, for `POST /regress/predict`.")
    metrics: LinearMetrics = Field(description="r2, MSE and MAE on the train and test sets.")
    pearson_r: float | None = Field(
        description="With one feature and one target: Pearson's r between them on the "
        "training samples (numpy's corrcoef); null otherwise.",
        examples=[0.92],
    )
    correlation: Strength | None = Field(
        description="With one feature and one target: `weak` (|r| < 0.3), `moderate` "
        "(< 0.6) or `strong`, the tutorial's scale; null otherwise.",
        examples=["strong"],
    )
    correlations: list[FeatureCorrelation] = Field(
        description="Pearson's r of every feature with every target (training samples)."
    )
    method: Literal["lstsq", "gd"] = Field(description="How it was fitted.")
    n_train: int = Field(description="Training samples.", examples=[20])
    n_test: int = Field(description="Test samples (0 without a split).", examples=[0])
    epochs: int | None = Field(description="`gd`: epochs run; null for `lstsq`.")
    loss_history: list[float] | None = Field(
        description="`gd`: the training MSE of each epoch in the target's units, as computed "
        "during it (before that epoch's update; mini-batches: their mean). Null for `lstsq`."
    )


# --- POST /regress/logistic ------------------------------------------------------------------

LOGISTIC_EXAMPLE: dict[str, Any] = {"dataset": "breast_cancer", "test_size": 0.2, "seed": 0}


class LogisticRegressionRequest(DataRequest):
    """A logistic regression (chapter 4): binary when the labels hold two classes (a linear
    score, the sigmoid, then `threshold`), multinomial (softmax) for more."""

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        needs("x", given("y")),
        when_value(
            "optimizer",
            ("lbfgs",),
            none_given("batch_size"),
            choices=("lbfgs", "sgd", "adam"),
            default="lbfgs",
        ),
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                LOGISTIC_EXAMPLE,
                {"dataset": "iris", "features": ["petal length (cm)", "petal width (cm)"]},
                {
                    "x": [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]],
                    "y": ["fail", "fail", "pass", "fail", "pass", "pass"],
                    "threshold": 0.5,
                },
            ]
        }
    }

    optimizer: Literal["lbfgs", "sgd", "adam"] = Field(
        default="lbfgs",
        description="`lbfgs` (default): `torch.optim.LBFGS` with a strong-Wolfe line search on "
        "the whole training set, as scikit-learn's default solver. `sgd`, `adam`: epochs of "
        "(mini-)batch gradient steps.",
        examples=["lbfgs"],
    )
    epochs: Int | None = Field(
        default=None, ge=1, le=MAX_EPOCHS, description=_EPOCHS_DOC, examples=[100]
    )
    lr: float | None = Field(default=None, gt=0, le=100, description=_LR_DOC, examples=[1.0])
    batch_size: Int | None = Field(
        default=None, ge=1, le=MAX_BATCH, description="`sgd`, `adam` only: " + _BATCH_DOC
    )
    l2: float = Field(
        default=1e-4,
        ge=0,
        le=1e6,
        description="L2 penalty: the loss is the mean log loss + l2/2 · ‖coef‖² (the "
        "intercept is not penalised). scikit-learn's `C` is l2 = 1 / (C · n_train).",
        examples=[1e-4],
    )
    tol: float = Field(
        default=1e-4,
        gt=0,
        le=1,
        description="`lbfgs` only: stop once no gradient component of the loss exceeds tol "
        "(scikit-learn's default is the same 1e-4).",
    )
    standardize: bool = Field(
        default=True,
        description="Standardise the features (training mean and standard deviation) before "
        "fitting; the scaler is part of the returned model and applied by predict.",
    )
    fit_intercept: bool = Field(default=True, description="Fit an intercept per logit.")
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Binary only: predict `classes[1]` when P(classes[1]) > threshold "
        "(default 0.5, the tutorial's). Given for more than two classes: a 422.",
        examples=[0.5],
    )
    test_size: float = Field(default=0.0, ge=0, lt=1, description=_TEST_SIZE_DOC, examples=[0.2])
    format: Format = Field(default="json", description=_FORMAT_DOC_LOGISTIC)

    @model_validator(mode="after")
    def _options_of_the_optimizer(self) -> LogisticRegressionRequest:
        if self.optimizer == "lbfgs" and self.batch_size is not None:
            raise ValueError("batch_size: `lbfgs` uses the whole training set")
        return self


class LogisticMetrics(BaseModel):
    """Classification metrics; rows and columns follow `model.classes`."""

    accuracy: float = Field(description="Fraction of training samples classified right.")
    accuracy_test: float | None = Field(description="Accuracy on the test set, if split.")
    log_loss: float | None = Field(
        description="Mean cross-entropy (log loss) of the training labels, without the "
        "penalty; null if it overflows."
    )
    log_loss_test: float | None = Field(description="Log loss on the test set, if split.")
    confusion_matrix: list[list[int]] = Field(
        description="Training set: entry [i][j] counts samples of class i predicted as j.",
        examples=[[[50, 2], [3, 45]]],
    )
    confusion_matrix_test: list[list[int]] | None = Field(
        description="The same on the test set, if split."
    )
    precision: list[float | None] = Field(
        description="Per class, training set: of the samples predicted as the class, the "
        "fraction that are (null when none is predicted as it)."
    )
    recall: list[float | None] = Field(
        description="Per class, training set: of the samples of the class, the fraction "
        "predicted as it (null when it has none)."
    )
    precision_test: list[float | None] | None = Field(
        description="Per-class precision on the test set, if split."
    )
    recall_test: list[float | None] | None = Field(
        description="Per-class recall on the test set, if split."
    )


class LogisticRegressionResponse(ComputeResponse):
    """The fitted model, its metrics and its training curve."""

    model: LogisticModel = Field(description="The model, for `POST /regress/predict`.")
    metrics: LogisticMetrics = Field(description="Accuracy, log loss, confusion, per class.")
    multinomial: bool = Field(description="Softmax over more than two classes.")
    optimizer: Literal["lbfgs", "sgd", "adam"] = Field(description="How it was fitted.")
    n_train: int = Field(description="Training samples.", examples=[455])
    n_test: int = Field(description="Test samples (0 without a split).", examples=[114])
    epochs: int = Field(description="Epochs (L-BFGS iterations) run.", examples=[25])
    converged: bool | None = Field(
        description="`lbfgs`: whether it stopped on `tol` (or because the loss stopped "
        "changing) before `epochs` ran out; null for `sgd`/`adam`."
    )
    loss_history: list[float] = Field(
        description="The training loss (with the penalty) of each epoch, as computed during "
        "it (before that epoch's update; mini-batches: their mean)."
    )


# --- POST /regress/predict -------------------------------------------------------------------

PREDICT_EXAMPLE: dict[str, Any] = {
    "model": {
        "kind": "linear",
        "coef": [17.9],
        "intercept": 5.5,
        "features": ["hours"],
        "targets": ["score"],
    },
    "x": [1.0, 2.5, 4.0],
}


class PredictRequest(ComputeRequest):
    """Predictions of a model exactly as a fit returned it (nothing is stored server-side)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                PREDICT_EXAMPLE,
                {
                    "model": {
                        "kind": "logistic",
                        "classes": ["fail", "pass"],
                        "coef": [1.5],
                        "intercept": -4.0,
                        "threshold": 0.5,
                        "scaler": None,
                        "features": ["hours"],
                    },
                    "x": [[1.0], [2.5], [4.0]],
                },
            ]
        }
    }

    model: Annotated[LinearModel | LogisticModel, Field(discriminator="kind")] = Field(
        description="A `model` from `POST /regress/linear` or `POST /regress/logistic`. Its "
        "shapes are checked: coef against the features, rows against the classes."
    )
    x: Samples = Field(
        description="The samples, [n_samples, n_features] in the model's feature order; a "
        "model of one feature also takes [n_samples]. Computed in float64.",
        examples=[[1.0, 2.5, 4.0]],
    )


class PredictResponse(ComputeResponse):
    """Predicted values (linear) or labels and probabilities (logistic)."""

    kind: Literal["linear", "logistic"] = Field(description="The model's kind.")
    y: TensorOut | list[int] | list[str] = Field(
        description="Linear: a float64 tensor, [n_samples] (or [n_samples, n_targets]). "
        "Logistic: the predicted labels, a list of values from `classes`."
    )
    proba: TensorOut | None = Field(
        description="Logistic: P(class) per sample, [n_samples, n_classes], float64, "
        "columns in the order of `classes`. Null for linear."
    )
