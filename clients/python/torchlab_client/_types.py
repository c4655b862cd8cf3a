"""The typed results of the client's methods.

Tensors are numpy arrays of the wire dtype (``int64`` stays ``int64``, ``float16`` stays
``float16``), except **bfloat16**, which numpy lacks: it arrives as ``float32`` holding the
same values exactly. With ``as_torch=True`` every tensor is a ``torch.Tensor`` instead, and
bfloat16 is ``torch.bfloat16`` again; the annotations below name numpy's type.

Results of routes whose answers may grow new fields keep the whole JSON answer in ``raw``.
Their reprs are short: an array of more than a few values shows as its shape and dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from torchlab_client._codec import NDArray, is_tensor
from torchlab_client._frames import column_names, select_columns

MAX_REPR_VALUES = 6
"""Arrays of at most this many values show them in a result's repr; larger ones show their
shape and dtype."""
MAX_REPR_ITEMS = 8
"""Lists and dicts of at most this many items show every item in a result's repr."""


def short_repr(value: Any) -> str:
    """``repr(value)`` for a result's repr: large arrays as ``array(shape=[..], dtype=..)``,
    long lists and dicts cut after a few items."""
    if is_tensor(value):
        if int(np.prod(value.shape)) <= MAX_REPR_VALUES:
            return " ".join(repr(value).split())
        kind = "array" if isinstance(value, np.ndarray) else "tensor"
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{kind}(shape={list(value.shape)}, dtype={dtype})"
    if isinstance(value, dict):
        items = [f"{key!r}: {short_repr(item)}" for key, item in value.items()]
        return "{" + ", ".join(_cut(items)) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_cut([short_repr(item) for item in value])) + "]"
    return repr(value)


def _cut(items: list[str]) -> list[str]:
    if len(items) <= MAX_REPR_ITEMS:
        return items
    return [*items[:3], f"… {len(items)} in all"]


class ShortRepr:
    """The repr of a result dataclass: its fields, each through :func:`short_repr`."""

    def __repr__(self) -> str:
        assert dataclasses.is_dataclass(self)
        shown = [
            f"{item.name}={short_repr(getattr(self, item.name))}"
            for item in dataclasses.fields(self)
            if item.repr
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


__all__ = [
    "ActivationFunction",
    "ActivationList",
    "ActivationResult",
    "ActivationResults",
    "Batch",
    "BenchmarkResult",
    "ConvResult",
    "DatasetInfo",
    "DeviceInfo",
    "DeviceTiming",
    "GradResult",
    "Health",
    "ImageBatch",
    "ImagesResult",
    "LinearLayerResult",
    "LinearRegressionResult",
    "LoaderResult",
    "LogisticRegressionResult",
    "PoolResult",
    "Prediction",
    "RNNResult",
    "RegressionModel",
    "ServiceInfo",
    "TensorInfo",
    "TensorOpsResult",
]


@dataclass(frozen=True, repr=False)
class Health(ShortRepr):
    """``GET /health``."""

    status: str

    @property
    def ok(self) -> bool:
        """Whether the service says it is alive."""
        return self.status == "ok"


@dataclass(frozen=True, repr=False)
class DeviceInfo(ShortRepr):
    """One device the service can compute on."""

    name: str
    type: str
    device_name: str
    threads: int | None = None
    cpu_count: int | None = None
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    capability: str | None = None


@dataclass(frozen=True, repr=False)
class ServiceInfo(ShortRepr):
    """``GET /info``: versions, devices and the limits in force."""

    name: str
    version: str
    torch_version: str
    torchvision_version: str | None
    cuda_available: bool
    cpu_threads: int
    default_device: str
    devices: list[DeviceInfo]
    limits: dict[str, Any]
    auth_required: bool


@dataclass(frozen=True, repr=False)
class DeviceTiming(ShortRepr):
    """``POST /benchmark``: the timings on one device."""

    device: str
    device_name: str
    first_run_s: float
    median_s: float
    min_s: float
    max_s: float
    gflops: float
    norm: float
    timer: str | None = None
    tf32: bool | None = None


@dataclass(frozen=True, repr=False)
class BenchmarkResult(ShortRepr):
    """``POST /benchmark``: ``c = a @ b`` timed on each device (tutorial chapter 1.2)."""

    torch_version: str
    cuda_available: bool
    m: int
    k: int
    n: int
    dtype: str
    flops_per_run: int
    results: list[DeviceTiming]
    max_norm_rel_diff: float | None
    device: str
    elapsed_ms: float


@dataclass(frozen=True, repr=False)
class TensorInfo(ShortRepr):
    """What an ``info`` step of ``POST /tensor/ops`` returns about a tensor. Also readable
    as the JSON object it came from: ``info["shape"]``."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    numel: int
    dtype: str
    is_contiguous: bool
    raw: dict[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass(frozen=True, repr=False)
class TensorOpsResult(ShortRepr, Mapping[str, NDArray]):
    """``POST /tensor/ops``: the returned tensors by name (a read-only mapping of numpy
    arrays, torch tensors with ``as_torch``), and in ``info`` what the ``info`` steps
    returned (:class:`TensorInfo`)."""

    tensors: dict[str, NDArray]
    info: dict[str, TensorInfo]
    device: str | None
    elapsed_ms: float | None

    def __getitem__(self, name: str) -> NDArray:
        try:
            return self.tensors[name]
        except KeyError:
            if name in self.info:
                raise KeyError(
                    f"{name!r} is what an `info` step returned: read result.info[{name!r}]"
                ) from None
            raise KeyError(
                f"{name!r} was not returned; the result has {sorted(self.tensors)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


@dataclass(frozen=True, repr=False)
class GradResult(ShortRepr):
    """``POST /grad``: the value and its gradients. Unpacks as ``value, grads = ...``."""

    value: NDArray
    grads: dict[str, NDArray]
    hessians: dict[str, dict[str, NDArray]] | None
    device: str
    elapsed_ms: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.value, self.grads))


@dataclass(frozen=True, repr=False)
class ActivationResult(ShortRepr):
    """One function over the inputs: ``y = f(x)`` and, with ``derivative``, ``dydx``."""

    function: str
    params: dict[str, Any]
    x: NDArray
    y: NDArray
    dydx: NDArray | None


@dataclass(frozen=True, repr=False)
class ActivationResults(ShortRepr):
    """``POST /activate``: one result per function, in the order asked. Indexable by
    position or by function name."""

    results: list[ActivationResult]
    device: str
    elapsed_ms: float

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ActivationResult]:
        return iter(self.results)

    @overload
    def __getitem__(self, key: int) -> ActivationResult: ...
    @overload
    def __getitem__(self, key: str) -> ActivationResult: ...
    def __getitem__(self, key: int | str) -> ActivationResult:
        if isinstance(key, int):
            return self.results[key]
        for result in self.results:
            if result.function == key:
                return result
        raise KeyError(key)


@dataclass(frozen=True, repr=False)
class ActivationFunction(ShortRepr):
    """One function ``POST /activate`` supports (from ``GET /activate``)."""

    name: str
    nn_class: str
    formula: str
    latex: str
    output_range: str
    params: list[dict[str, Any]]
    along_dim: bool
    derivative: str


@dataclass(frozen=True, repr=False)
class ActivationList(ShortRepr):
    """``GET /activate``: every supported function and the defaults."""

    functions: list[ActivationFunction]
    default_functions: list[str]
    default_range: dict[str, Any]
    max_functions: int
    max_plot_points: int

    def names(self) -> list[str]:
        """The functions' names."""
        return [function.name for function in self.functions]


@dataclass(frozen=True, repr=False)
class LinearLayerResult(ShortRepr):
    """``POST /layers/linear``: the output and the parameters used."""

    output: NDArray
    weight: NDArray
    bias: NDArray | None
    device: str
    elapsed_ms: float


@dataclass(frozen=True, repr=False)
class RNNResult(ShortRepr):
    """``POST /layers/rnn``: the output sequence, final states, and the parameters."""

    output: NDArray
    h_n: NDArray
    c_n: NDArray | None
    parameters: dict[str, tuple[int, ...]]
    weights: dict[str, NDArray] | None
    device: str
    elapsed_ms: float


@dataclass(frozen=True, repr=False)
class ConvResult(ShortRepr):
    """``POST /conv``: the feature maps ``[N, C_out, H', W']`` (after ``activation`` and
    ``pool`` when given) and the kernels used."""

    output: NDArray
    weight: NDArray | None
    bias: NDArray | None
    kernels: list[str]
    input_shape: tuple[int, ...] | None
    conv_shape: tuple[int, ...] | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class PoolResult(ShortRepr):
    """``POST /pool``: the pooled maps ``[N, C, H', W']``."""

    output: NDArray
    input_shape: tuple[int, ...] | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class RegressionModel(ShortRepr):
    """A fitted model as a fit returned it: ``coef`` as a float64 array, ``intercept`` a
    float (one target, or a binary model) or a float64 array. :meth:`Client.predict` sends
    ``raw``, the model's JSON, back unchanged; :meth:`predict` and :meth:`predict_proba`
    compute the same numbers here, with numpy.

    Linear: ``y = x @ coef.T + intercept``. Logistic: the features are standardised with
    ``scaler`` (``(x - mean) / scale``) when it is given, then binary models predict
    ``classes[1]`` when ``sigmoid(x @ coef + intercept) > threshold`` and multinomial ones
    the class of the largest softmax probability.
    """

    kind: str
    coef: NDArray
    intercept: float | NDArray
    features: list[str] | None
    targets: list[str] | None
    classes: list[Any] | None
    threshold: float | None
    scaler: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def n_features(self) -> int:
        """How many features (columns of x) the model takes."""
        return int(np.shape(self.coef)[-1])

    def features_of(self, x: Any) -> NDArray:
        """``x`` as the float64 matrix ``[n_samples, n_features]`` the model takes: a table's
        columns picked by name in the model's feature order; ``[n]`` for a one-feature
        model."""
        names = column_names(x)
        if names is not None and self.features and set(self.features) <= set(names):
            matrix = select_columns(x, self.features, "x")
        elif names is not None and self.features and not _default_names(self.features):
            missing = [name for name in self.features if name not in names]
            raise ValueError(
                f"x lacks the model's feature(s) {', '.join(map(repr, missing[:5]))}; it was "
                f"fitted on {self.features}"
            )
        else:
            matrix = np.asarray(x)
        matrix = matrix.astype(np.float64, copy=False)
        if matrix.ndim == 1 and self.n_features == 1:
            matrix = matrix[:, None]
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(
                f"x has shape {list(matrix.shape)}; this model takes [n_samples, "
                f"{self.n_features}]" + (" (or [n_samples])" if self.n_features == 1 else "")
            )
        if not np.isfinite(matrix).all():
            raise ValueError("x holds NaN or infinite values")
        return matrix

    def predict(self, x: Any) -> NDArray:
        """Predictions for ``x`` (an array, nested lists, or a DataFrame with the model's
        feature columns), as ``POST /regress/predict`` computes them: float64 values
        ``[n]`` (``[n, n_targets]`` for several targets), or the class labels."""
        matrix = self.features_of(x)
        if self.kind == "linear":
            out = matrix @ np.atleast_2d(self.coef).T + np.atleast_1d(self.intercept)
            result: NDArray = out[:, 0] if np.ndim(self.coef) == 1 else out
            return result
        labels = np.asarray(self.classes)
        logits = self._logits(matrix)
        if len(labels) == 2:
            threshold = 0.5 if self.threshold is None else self.threshold
            chosen: NDArray = labels[(_sigmoid(logits[:, 0]) > threshold).astype(np.int64)]
            return chosen
        picked: NDArray = labels[np.argmax(logits, axis=1)]
        return picked

    def predict_proba(self, x: Any) -> NDArray:
        """A logistic model's P(class) per sample, ``[n, n_classes]`` in the order of
        ``classes``."""
        if self.kind != "logistic":
            raise TypeError("predict_proba is for logistic models; this one is linear")
        logits = self._logits(self.features_of(x))
        if len(self.classes or ()) == 2:
            positive = _sigmoid(logits[:, 0])
            return np.stack([1 - positive, positive], axis=1)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        proba: NDArray = shifted / shifted.sum(axis=1, keepdims=True)
        return proba

    def _logits(self, matrix: NDArray) -> NDArray:
        if self.scaler is not None:
            mean = np.asarray(self.scaler["mean"], dtype=np.float64)
            scale = np.asarray(self.scaler["scale"], dtype=np.float64)
            matrix = (matrix - mean) / scale
        logits: NDArray = matrix @ np.atleast_2d(self.coef).T + np.atleast_1d(self.intercept)
        return logits


def _sigmoid(z: NDArray) -> NDArray:
    with np.errstate(over="ignore"):
        result: NDArray = np.where(z >= 0, 1 / (1 + np.exp(-z)), np.exp(z) / (1 + np.exp(z)))
    return result


def _default_names(features: Sequence[str]) -> bool:
    """Whether ``features`` are the names the service gives the columns of a bare ``x``."""
    return list(features) == [f"x{i}" for i in range(len(features))]


@dataclass(frozen=True, repr=False)
class LinearRegressionResult(ShortRepr):
    """``POST /regress/linear`` (tutorial chapter 2). ``metrics`` has ``r2``, ``mse``,
    ``mae`` and their ``_test`` twins; ``correlations`` every feature's Pearson r with
    every target."""

    model: RegressionModel
    metrics: dict[str, Any]
    pearson_r: float | None
    correlation: str | None
    correlations: list[dict[str, Any]]
    method: str | None
    n_train: int | None
    n_test: int | None
    epochs: int | None
    loss_history: NDArray | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class LogisticRegressionResult(ShortRepr):
    """``POST /regress/logistic`` (tutorial chapter 4). ``metrics`` has ``accuracy``,
    ``log_loss``, ``confusion_matrix``, per-class ``precision`` and ``recall`` (and their
    ``_test`` twins with a split)."""

    model: RegressionModel
    metrics: dict[str, Any]
    multinomial: bool | None
    optimizer: str | None
    n_train: int | None
    n_test: int | None
    epochs: int | None
    converged: bool | None
    loss_history: NDArray | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class Prediction(ShortRepr):
    """``POST /regress/predict``. Linear: ``y`` float64 values ``[n]`` (``[n, n_targets]``).
    Logistic: ``y`` the labels as an array (int64, or strings for string labels, as
    scikit-learn's ``predict``) and ``proba`` ``[n_samples, n_classes]``."""

    kind: str | None
    y: NDArray
    proba: NDArray | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class DatasetInfo(ShortRepr):
    """One built-in dataset (``GET /datasets``)."""

    name: str
    task: str | None
    n_samples: int | None
    n_features: int | None
    feature_names: list[str]
    target_names: list[str]
    classes: list[Any] | None
    class_names: list[str] | None
    image_shape: tuple[int, ...] | None
    description: str | None
    source: str | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, repr=False)
class Batch(ShortRepr):
    """One DataLoader batch: shapes always, tensors and sample indices with
    ``include_data``."""

    index: int
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...] | None
    x: NDArray | None
    y: NDArray | None
    indices: list[int] | None


@dataclass(frozen=True, repr=False)
class LoaderResult(ShortRepr):
    """``POST /data/loader`` (tutorial chapter 7.1): what the ``DataLoader`` holds, and the
    batches asked for. Iterating gives the batches; ``n_batches`` is how many one epoch
    has, and ``complete`` says whether ``batches`` holds them all (``max_batches="all"``).

    ``classes`` are the class labels of a classification (for string labels, the label of
    each index y holds); ``class_names`` what they mean, for a built-in dataset."""

    dataset: str | None
    task: str | None
    n_samples: int | None
    n_features: int | None
    features: list[str]
    targets: list[str]
    classes: list[Any] | None
    x_dtype: str | None
    y_dtype: str | None
    batch_size: int | None
    n_batches: int | None
    batches: list[Batch]
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)
    class_names: list[str] | None = None

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def complete(self) -> bool:
        """Whether ``batches`` is a whole epoch."""
        return self.n_batches is not None and len(self.batches) >= self.n_batches


@dataclass(frozen=True, repr=False)
class ImageBatch(ShortRepr):
    """The first batch of ``POST /data/images``: shapes and dtypes, the class index of each
    picture, and (with ``include_data``) the tensors."""

    x_shape: tuple[int, ...]
    x_dtype: str | None
    y_shape: tuple[int, ...] | None
    y_dtype: str | None
    targets: list[int]
    x: NDArray | None
    y: NDArray | None


@dataclass(frozen=True, repr=False)
class ImagesResult(ShortRepr):
    """``POST /data/images`` (tutorial chapter 7.2): the classes and counts, the transforms
    as torchvision writes them, the first batch, and per-channel mean and std."""

    source: str | None
    n_images: int | None
    classes: list[str]
    class_to_idx: dict[str, int]
    counts: dict[str, int]
    skipped: list[str]
    transforms: list[str]
    image_shape: tuple[int, ...] | None
    batch_size: int | None
    n_batches: int | None
    batch: ImageBatch | None
    mean: list[float] | None
    std: list[float] | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)
