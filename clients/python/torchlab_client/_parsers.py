"""Reading the service's answers into the result dataclasses of ``_types``.

Answers without tensors are read straight from the response (``service_info``, ...).
Answers with tensors are read from their JSON body and whether tensors come back as torch
(``conv_result(body, as_torch)``, ...); the client checks ``as_torch`` before it sends.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import httpx
import numpy as np

from torchlab_client._codec import (
    array_to_torch,
    decode_loose,
    decode_optional,
    decode_tensor,
    is_wire_tensor,
    replace_non_finite,
    tensor_input,
)
from torchlab_client._exceptions import ProtocolError
from torchlab_client._images import PNGImage
from torchlab_client._types import (
    ActivationFunction,
    ActivationList,
    ActivationResult,
    ActivationResults,
    Batch,
    BenchmarkResult,
    ConvResult,
    DatasetInfo,
    DeviceInfo,
    DeviceTiming,
    GradResult,
    Health,
    ImageBatch,
    ImagesResult,
    LinearLayerResult,
    LinearRegressionResult,
    LoaderResult,
    LogisticRegressionResult,
    PoolResult,
    Prediction,
    RegressionModel,
    RNNResult,
    ServiceInfo,
    TensorInfo,
    TensorOpsResult,
)

_DEVICE_FIELDS = frozenset(DeviceInfo.__dataclass_fields__)
_TIMING_FIELDS = frozenset(DeviceTiming.__dataclass_fields__)
_ACTIVATION_FIELDS = frozenset(ActivationFunction.__dataclass_fields__)


# --- answers read from the response ----------------------------------------------------------


FRAMED_ANSWER = "torchlab.framed_answer"
"""Where a binary answer's JSON (its tensors attached as arrays) waits in the response's
``extensions`` for the readers."""


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object (a binary answer's, with its arrays); a
    :class:`ProtocolError` if it is not one."""
    framed = response.extensions.get(FRAMED_ANSWER)
    if framed is not None:
        return framed  # type: ignore[no-any-return]
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError) as exc:
        deep = " nested too deep" if isinstance(exc, RecursionError) else ""
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON"
            f"{deep} ({response.headers.get('content-type')})"
        ) from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a JSON object, got {type(body).__name__}")
    return body


def png_image(response: httpx.Response) -> PNGImage:
    """A ``format=png`` answer; a :class:`ProtocolError` if it is not a PNG."""
    if not response.headers.get("content-type", "").startswith("image/png"):
        raise ProtocolError(
            f"expected image/png, got {response.headers.get('content-type')}: "
            f"{response.content[:200]!r}"
        )
    return PNGImage(response.content, dict(response.headers))


def text(response: httpx.Response) -> str:
    """A text answer (``GET /metrics``)."""
    return response.text


def health(response: httpx.Response) -> Health:
    """``GET /health``."""
    return Health(str(json_body(response).get("status")))


def service_info(response: httpx.Response) -> ServiceInfo:
    """``GET /info``."""
    body = json_body(response)
    return ServiceInfo(
        name=body["name"],
        version=body["version"],
        torch_version=body["torch_version"],
        torchvision_version=body.get("torchvision_version"),
        cuda_available=bool(body["cuda_available"]),
        cpu_threads=int(body["cpu_threads"]),
        default_device=body["default_device"],
        devices=[
            DeviceInfo(**{k: v for k, v in d.items() if k in _DEVICE_FIELDS})
            for d in body.get("devices", [])
        ],
        limits=dict(body.get("limits", {})),
        auth_required=bool(body.get("auth_required", False)),
    )


def benchmark_result(response: httpx.Response) -> BenchmarkResult:
    """``POST /benchmark``."""
    body = json_body(response)
    return BenchmarkResult(
        torch_version=body["torch_version"],
        cuda_available=bool(body["cuda_available"]),
        m=int(body["m"]),
        k=int(body["k"]),
        n=int(body["n"]),
        dtype=body["dtype"],
        flops_per_run=int(body["flops_per_run"]),
        results=[
            DeviceTiming(**{k: v for k, v in item.items() if k in _TIMING_FIELDS})
            for item in body["results"]
        ],
        max_norm_rel_diff=_float(body.get("max_norm_rel_diff")),
        device=body["device"],
        elapsed_ms=float(body["elapsed_ms"]),
    )


def activation_list(response: httpx.Response) -> ActivationList:
    """``GET /activate``."""
    body = json_body(response)
    return ActivationList(
        functions=[
            ActivationFunction(**{k: v for k, v in item.items() if k in _ACTIVATION_FIELDS})
            for item in body["functions"]
        ],
        default_functions=list(body.get("default_functions", [])),
        default_range=dict(body.get("default_range", {})),
        max_functions=int(body.get("max_functions", 0)),
        max_plot_points=int(body.get("max_plot_points", 0)),
    )


def dataset_infos(response: httpx.Response) -> list[DatasetInfo]:
    """``GET /datasets``."""
    items = json_body(response).get("datasets")
    if not isinstance(items, list):
        raise ProtocolError("the answer has no list of 'datasets'")
    return [
        DatasetInfo(
            name=str(item["name"]),
            task=item.get("task"),
            n_samples=_int(item.get("n_samples")),
            n_features=_int(item.get("n_features")),
            feature_names=_strings(item.get("feature_names")),
            target_names=_strings(item.get("target_names")),
            classes=item.get("classes"),
            class_names=item.get("class_names"),
            image_shape=_shape(item.get("image_shape")),
            description=item.get("description"),
            source=item.get("source"),
            raw=item,
        )
        for item in items
    ]


# --- answers with tensors: (JSON body, as_torch) -> result -------------------------------------


def tensor_outputs(body: dict[str, Any], as_torch: bool) -> TensorOpsResult:
    """``POST /tensor/ops``: the tensors by name, and what ``info`` steps returned."""
    outputs = body.get("outputs")
    if not isinstance(outputs, dict):
        raise ProtocolError("the answer has no 'outputs'")
    tensors, info = {}, {}
    for name, value in outputs.items():
        if is_wire_tensor(value):
            tensors[name] = decode_tensor(value, as_torch)
        elif isinstance(value, dict):
            info[name] = TensorInfo(
                shape=_shape(value.get("shape")) or (),
                stride=_shape(value.get("stride")) or (),
                numel=int(value.get("numel", 0)),
                dtype=str(value.get("dtype")),
                is_contiguous=bool(value.get("is_contiguous")),
                raw=value,
            )
        else:
            raise ProtocolError(f"output {name!r} is neither a tensor nor an info object")
    return TensorOpsResult(
        tensors=tensors,
        info=info,
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
    )


def grad_result(body: dict[str, Any], as_torch: bool) -> GradResult:
    """``POST /grad``."""
    hessians = body.get("hessians")
    return GradResult(
        value=decode_tensor(body["value"], as_torch),
        grads={k: decode_tensor(v, as_torch) for k, v in body["grads"].items()},
        hessians=None
        if hessians is None
        else {
            a: {b: decode_tensor(v, as_torch) for b, v in row.items()}
            for a, row in hessians.items()
        },
        device=body["device"],
        elapsed_ms=float(body["elapsed_ms"]),
    )


def activation_results(body: dict[str, Any], as_torch: bool) -> ActivationResults:
    """``POST /activate``."""
    return ActivationResults(
        results=[
            ActivationResult(
                function=item["function"],
                params=dict(item.get("params") or {}),
                x=decode_tensor(item["x"], as_torch),
                y=decode_tensor(item["y"], as_torch),
                dydx=decode_optional(item.get("dydx"), as_torch),
            )
            for item in body["results"]
        ],
        device=body["device"],
        elapsed_ms=float(body["elapsed_ms"]),
    )


def linear_layer_result(body: dict[str, Any], as_torch: bool) -> LinearLayerResult:
    """``POST /layers/linear``."""
    return LinearLayerResult(
        output=decode_tensor(body["output"], as_torch),
        weight=decode_tensor(body["weight"], as_torch),
        bias=decode_optional(body.get("bias"), as_torch),
        device=body["device"],
        elapsed_ms=float(body["elapsed_ms"]),
    )


def rnn_result(body: dict[str, Any], as_torch: bool) -> RNNResult:
    """``POST /layers/rnn``."""
    weights = body.get("weights")
    return RNNResult(
        output=decode_tensor(body["output"], as_torch),
        h_n=decode_tensor(body["h_n"], as_torch),
        c_n=decode_optional(body.get("c_n"), as_torch),
        parameters={k: tuple(v) for k, v in body.get("parameters", {}).items()},
        weights=None
        if weights is None
        else {k: decode_tensor(v, as_torch) for k, v in weights.items()},
        device=body["device"],
        elapsed_ms=float(body["elapsed_ms"]),
    )


def conv_result(body: dict[str, Any], as_torch: bool) -> ConvResult:
    """``POST /conv``."""
    return ConvResult(
        output=decode_tensor(body["output"], as_torch),
        weight=decode_optional(body.get("weight"), as_torch),
        bias=decode_optional(body.get("bias"), as_torch),
        kernels=_strings(body.get("kernels")),
        input_shape=_shape(body.get("input_shape")),
        conv_shape=_shape(body.get("conv_shape")),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def pool_result(body: dict[str, Any], as_torch: bool) -> PoolResult:
    """``POST /pool``."""
    return PoolResult(
        output=decode_tensor(body["output"], as_torch),
        input_shape=_shape(body.get("input_shape")),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def linear_regression_result(body: dict[str, Any], as_torch: bool) -> LinearRegressionResult:
    """``POST /regress/linear``."""
    correlations = body.get("correlations")
    return LinearRegressionResult(
        model=regression_model(body.get("model"), as_torch),
        metrics=dict(body.get("metrics") or {}),
        pearson_r=_float(body.get("pearson_r")),
        correlation=body.get("correlation"),
        correlations=list(correlations) if isinstance(correlations, list) else [],
        method=body.get("method"),
        n_train=_int(body.get("n_train")),
        n_test=_int(body.get("n_test")),
        epochs=_int(body.get("epochs")),
        loss_history=decode_loose(body.get("loss_history"), as_torch),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def logistic_regression_result(body: dict[str, Any], as_torch: bool) -> LogisticRegressionResult:
    """``POST /regress/logistic``."""
    multinomial = body.get("multinomial")
    converged = body.get("converged")
    return LogisticRegressionResult(
        model=regression_model(body.get("model"), as_torch),
        metrics=dict(body.get("metrics") or {}),
        multinomial=None if multinomial is None else bool(multinomial),
        optimizer=body.get("optimizer"),
        n_train=_int(body.get("n_train")),
        n_test=_int(body.get("n_test")),
        epochs=_int(body.get("epochs")),
        converged=None if converged is None else bool(converged),
        loss_history=decode_loose(body.get("loss_history"), as_torch),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def prediction(body: dict[str, Any], as_torch: bool) -> Prediction:
    """``POST /regress/predict``: labels as an array too (strings as numpy strings)."""
    y = decode_loose(body.get("y"), as_torch)
    return Prediction(
        kind=body.get("kind"),
        y=np.asarray(y) if isinstance(y, list) else y,
        proba=decode_loose(body.get("proba"), as_torch),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def loader_result(body: dict[str, Any], as_torch: bool) -> LoaderResult:
    """``POST /data/loader``."""
    classes = body.get("classes")
    return LoaderResult(
        dataset=body.get("dataset"),
        task=body.get("task"),
        n_samples=_int(body.get("n_samples")),
        n_features=_int(body.get("n_features")),
        features=_strings(body.get("features")),
        targets=_strings(body.get("targets")),
        classes=list(classes) if isinstance(classes, list) else None,
        x_dtype=body.get("x_dtype"),
        y_dtype=body.get("y_dtype"),
        batch_size=_int(body.get("batch_size")),
        n_batches=_int(body.get("n_batches")),
        batches=[
            Batch(
                index=int(batch.get("index", i)),
                x_shape=_shape(batch.get("x_shape")) or (),
                y_shape=_shape(batch.get("y_shape")),
                x=decode_optional(batch.get("x"), as_torch),
                y=decode_optional(batch.get("y"), as_torch),
                indices=batch.get("indices"),
            )
            for i, batch in enumerate(body.get("batches") or [])
        ],
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def images_result(body: dict[str, Any], as_torch: bool) -> ImagesResult:
    """``POST /data/images``."""
    batch = body.get("batch")
    return ImagesResult(
        source=body.get("source"),
        n_images=_int(body.get("n_images")),
        classes=_strings(body.get("classes")),
        class_to_idx=dict(body.get("class_to_idx") or {}),
        counts=dict(body.get("counts") or {}),
        skipped=_strings(body.get("skipped")),
        transforms=_strings(body.get("transforms")),
        image_shape=_shape(body.get("image_shape")),
        batch_size=_int(body.get("batch_size")),
        n_batches=_int(body.get("n_batches")),
        batch=None
        if not isinstance(batch, dict)
        else ImageBatch(
            x_shape=_shape(batch.get("x_shape")) or (),
            x_dtype=batch.get("x_dtype"),
            y_shape=_shape(batch.get("y_shape")),
            y_dtype=batch.get("y_dtype"),
            targets=[int(t) for t in batch.get("targets") or []],
            x=decode_optional(batch.get("x"), as_torch),
            y=decode_optional(batch.get("y"), as_torch),
        ),
        mean=_float_list(body.get("mean")),
        std=_float_list(body.get("std")),
        device=body.get("device"),
        elapsed_ms=_float(body.get("elapsed_ms")),
        raw=body,
    )


def label_values(y: Any) -> list[int] | None:
    """The sorted integer labels of ``y`` as given to a classification (None unless they
    are integers)."""
    try:
        values = np.unique(np.asarray(tensor_input(y)))
    except (TypeError, ValueError, RuntimeError):
        return None
    if values.dtype.kind not in "biu":
        return None
    return [int(v) for v in values]


def warn_if_incomplete(result: LoaderResult, max_batches: object) -> None:
    """Warn when ``max_batches="all"`` could not list a whole epoch in one answer."""
    if max_batches == "all" and not result.complete:
        warnings.warn(
            f"the epoch has {result.n_batches} batches; one answer lists at most "
            f"{len(result.batches)}: take a larger batch_size to see them all",
            RuntimeWarning,
            stacklevel=4,  # this, data_loader, its keyword check, the caller
        )


# --- values inside answers --------------------------------------------------------------------


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value)
    return float(value)


def _float64(value: Any, as_torch: bool) -> Any:
    """A model's numbers: a float, or a float64 array (a torch tensor with ``as_torch``)."""
    if isinstance(value, list):
        array = np.asarray(replace_non_finite(value), dtype=np.float64)
        return array_to_torch(array) if as_torch else array
    return _float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _shape(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(s) for s in value)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    if is_wire_tensor(value):
        return [float(v) for v in np.ravel(decode_tensor(value))]
    if isinstance(value, list):
        return [float(v) for v in np.ravel(np.asarray(value, dtype=np.float64))]
    return None


def regression_model(value: Any, as_torch: bool) -> RegressionModel:
    """A fitted model from its JSON (``coef`` float64, ``intercept`` a float or float64)."""
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a model object, got {value!r:.200}")
    classes = value.get("classes")
    scaler = value.get("scaler")
    return RegressionModel(
        kind=str(value.get("kind", "")),
        coef=_float64(value.get("coef"), as_torch),
        intercept=_float64(value.get("intercept"), as_torch),
        features=_strings(value.get("features")) or None,
        targets=_strings(value.get("targets")) or None,
        classes=list(classes) if isinstance(classes, list) else None,
        threshold=_float(value.get("threshold")),
        scaler=dict(scaler) if isinstance(scaler, dict) else None,
        raw=value,
    )
