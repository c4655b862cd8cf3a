"""The typed results of the client's methods.

Tensors are numpy arrays of the wire dtype (``int64`` stays ``int64``, ``float16`` stays
``float16``), except **bfloat16**, which numpy lacks: it arrives as ``float32`` holding the
same values exactly. With ``as_torch=True`` every tensor is a ``torch.Tensor`` instead, and
bfloat16 is ``torch.bfloat16`` again; the annotations below name numpy's type.

Results of routes whose answers may grow new fields keep the whole JSON answer in ``raw``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from torchlab_client._codec import NDArray

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
]


@dataclass(frozen=True)
class Health:
    """``GET /health``."""

    status: str

    @property
    def ok(self) -> bool:
        """Whether the service says it is alive."""
        return self.status == "ok"


@dataclass(frozen=True)
class DeviceInfo:
    """One device the service can compute on."""

    name: str
    type: str
    device_name: str
    threads: int | None = None
    cpu_count: int | None = None
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    capability: str | None = None


@dataclass(frozen=True)
class ServiceInfo:
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


@dataclass(frozen=True)
class DeviceTiming:
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


@dataclass(frozen=True)
class BenchmarkResult:
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


@dataclass(frozen=True)
class GradResult:
    """``POST /grad``: the value and its gradients. Unpacks as ``value, grads = ...``."""

    value: NDArray
    grads: dict[str, NDArray]
    hessians: dict[str, dict[str, NDArray]] | None
    device: str
    elapsed_ms: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.value, self.grads))


@dataclass(frozen=True)
class ActivationResult:
    """One function over the inputs: ``y = f(x)`` and, with ``derivative``, ``dydx``."""

    function: str
    params: dict[str, Any]
    x: NDArray
    y: NDArray
    dydx: NDArray | None


@dataclass(frozen=True)
class ActivationResults:
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


@dataclass(frozen=True)
class ActivationFunction:
    """One function ``POST /activate`` supports (from ``GET /activate``)."""

    name: str
    nn_class: str
    formula: str
    latex: str
    output_range: str
    params: list[dict[str, Any]]
    along_dim: bool
    derivative: str


@dataclass(frozen=True)
class ActivationList:
    """``GET /activate``: every supported function and the defaults."""

    functions: list[ActivationFunction]
    default_functions: list[str]
    default_range: dict[str, Any]
    max_functions: int
    max_plot_points: int

    def names(self) -> list[str]:
        """The functions' names."""
        return [function.name for function in self.functions]


@dataclass(frozen=True)
class LinearLayerResult:
    """``POST /layers/linear``: the output and the parameters used."""

    output: NDArray
    weight: NDArray
    bias: NDArray | None
    device: str
    elapsed_ms: float


@dataclass(frozen=True)
class RNNResult:
    """``POST /layers/rnn``: the output sequence, final states, and the parameters."""

    output: NDArray
    h_n: NDArray
    c_n: NDArray | None
    parameters: dict[str, tuple[int, ...]]
    weights: dict[str, NDArray] | None
    device: str
    elapsed_ms: float


@dataclass(frozen=True)
class ConvResult:
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


@dataclass(frozen=True)
class PoolResult:
    """``POST /pool``: the pooled maps ``[N, C, H', W']``."""

    output: NDArray
    input_shape: tuple[int, ...] | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RegressionModel:
    """A fitted model as a fit returned it: ``coef`` and ``intercept`` as float64 arrays
    (``intercept`` a float for one target or a binary model). :meth:`Client.predict` sends
    ``raw``, the model's JSON, back unchanged."""

    kind: str
    coef: Any
    intercept: Any
    features: list[str] | None
    targets: list[str] | None
    classes: list[Any] | None
    threshold: float | None
    scaler: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class LinearRegressionResult:
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


@dataclass(frozen=True)
class LogisticRegressionResult:
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


@dataclass(frozen=True)
class Prediction:
    """``POST /regress/predict``. Linear: ``y`` float64 values. Logistic: ``y`` the labels
    (an int64 array, or a list of strings for string labels) and ``proba``
    ``[n_samples, n_classes]``."""

    kind: str | None
    y: Any
    proba: NDArray | None
    device: str | None
    elapsed_ms: float | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class DatasetInfo:
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


@dataclass(frozen=True)
class Batch:
    """One DataLoader batch: shapes always, tensors and sample indices with
    ``include_data``."""

    index: int
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...] | None
    x: NDArray | None
    y: NDArray | None
    indices: list[int] | None


@dataclass(frozen=True)
class LoaderResult:
    """``POST /data/loader`` (tutorial chapter 7.1)."""

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


@dataclass(frozen=True)
class ImageBatch:
    """The first batch of ``POST /data/images``: shapes and dtypes, the class index of each
    picture, and (with ``include_data``) the tensors."""

    x_shape: tuple[int, ...]
    x_dtype: str | None
    y_shape: tuple[int, ...] | None
    y_dtype: str | None
    targets: list[int]
    x: NDArray | None
    y: NDArray | None


@dataclass(frozen=True)
class ImagesResult:
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
