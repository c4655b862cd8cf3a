"""Every route's request, built once for both clients and for both of its answers.

A client method hands its own arguments to its route's builder here, with
``arguments(locals())`` as its first statement: a method's parameters are the route's
fields, by name. A field the service adds to a route is therefore a new parameter of the
route's methods in ``_async_client`` and nothing more, unless it needs converting on the way
(a sequence to a list, a size inferred from a tensor), which the route's builder does.

A route's JSON method and its ``_png`` twin send the same request, the twin's with
``format=png`` (:meth:`Request.as_png`); they differ only in how they read the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias, TypeVar

import numpy as np

from torchlab_client._images import (
    FileInput,
    ImageInput,
    Upload,
    archive_upload,
    csv_upload,
    image_upload,
)
from torchlab_client._types import (
    LinearRegressionResult,
    LogisticRegressionResult,
    RegressionModel,
)

T = TypeVar("T")

TensorInput: TypeAlias = Any
"""A numpy array, a torch tensor, a nested list of numbers, or a number."""
ModelInput: TypeAlias = (
    "RegressionModel | LinearRegressionResult | LogisticRegressionResult | Mapping[str, Any]"
)

_NOT_FIELDS = frozenset({"self", "as_torch"})


@dataclass(frozen=True)
class Request:
    """One route's request, not yet encoded (the client encodes it with its settings).

    ``fields`` go as a JSON body, or as form fields beside ``files`` when there are uploads;
    fields that are None are not sent, so the service's defaults apply.
    """

    method: str
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    files: tuple[tuple[str, Upload], ...] = ()
    tensors: bool = True
    """Whether the answer carries tensors (only then may they be asked for in base64)."""
    large_output: bool = False
    """Whether the answer is large even for a small request (a picture's feature maps)."""
    png: bool = False
    """Whether the answer is a picture (``format=png``)."""

    def as_png(self) -> Request:
        """The same request, answered with a PNG picture."""
        return replace(self, fields={**self.fields, "format": "png"}, png=True)


def arguments(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A client method's arguments (its ``locals()``) as its route builder's keywords:
    without ``self`` and ``as_torch``, with the ``**options`` catch-all spread out."""
    named = {key: value for key, value in scope.items() if key not in _NOT_FIELDS}
    options = named.pop("options", {})
    return {**named, **options}


# --- system ----------------------------------------------------------------------------------


def health() -> Request:
    """``GET /health``."""
    return Request("GET", "/health")


def info() -> Request:
    """``GET /info``."""
    return Request("GET", "/info")


def metrics() -> Request:
    """``GET /metrics``."""
    return Request("GET", "/metrics")


def openapi() -> Request:
    """``GET /openapi.json``."""
    return Request("GET", "/openapi.json")


def benchmark(*, devices: Sequence[str] | None, **fields: Any) -> Request:
    """``POST /benchmark``."""
    return Request("POST", "/benchmark", {**fields, "devices": _list(devices)}, tensors=False)


# --- tensors and autograd --------------------------------------------------------------------


def tensor_ops(
    steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    inputs: Mapping[str, TensorInput] | None,
    returns: str | Sequence[str] | None,
    **fields: Any,
) -> Request:
    """``POST /tensor/ops``: one step or a list; ``returns`` goes as ``return``."""
    names = [returns] if isinstance(returns, str) else returns
    body = {
        "inputs": dict(inputs) if inputs else None,
        "steps": [steps] if isinstance(steps, Mapping) else list(steps),
        "return": _list(names),
        **fields,
    }
    return Request("POST", "/tensor/ops", body)


def grad(
    expression: str,
    wrt: str | Sequence[str] | None,
    hessian: bool,
    *,
    inputs: Mapping[str, TensorInput] | None,
    named_inputs: Mapping[str, TensorInput],
    **fields: Any,
) -> Request:
    """``POST /grad``: ``inputs`` and the inputs given by name go together."""
    body = {
        "expression": expression,
        "inputs": {**(inputs or {}), **named_inputs},
        "wrt": [wrt] if isinstance(wrt, str) else _list(wrt),
        "hessian": True if hessian else None,
        **fields,
    }
    return Request("POST", "/grad", body)


# --- activations and layers ------------------------------------------------------------------


def activate(
    functions: str | Sequence[str | Mapping[str, Any]] | None,
    x: TensorInput | None,
    *,
    x_range: tuple[float, float, int] | Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
    derivative: bool,
    **fields: Any,
) -> Request:
    """``POST /activate``: one name goes as ``function``, a list as ``functions``;
    ``x_range`` as ``range`` (a ``(start, end, steps)`` tuple becomes an object)."""
    if isinstance(x_range, tuple | list):
        start, end, steps = x_range
        x_range = {"start": start, "end": end, "steps": steps}
    body = {
        "function": functions if isinstance(functions, str) else None,
        "functions": None
        if functions is None or isinstance(functions, str)
        else [f if isinstance(f, str) else dict(f) for f in functions],
        "x": x,
        "range": None if x_range is None else dict(x_range),
        "params": None if params is None else dict(params),
        "derivative": True if derivative else None,
        **fields,
    }
    return Request("POST", "/activate", body)


def list_activations() -> Request:
    """``GET /activate``."""
    return Request("GET", "/activate")


def linear_layer(
    input: TensorInput,
    in_features: int | None,
    out_features: int | None,
    *,
    weight: TensorInput | None,
    **fields: Any,
) -> Request:
    """``POST /layers/linear``: ``in_features`` defaults to the input's last dimension,
    ``out_features`` to the rows of ``weight``."""
    if in_features is None:
        in_features = _last_dim(input)
    if out_features is None and weight is not None:
        shape = _shape_of(weight)
        out_features = shape[0] if shape else None
    body = {
        "in_features": in_features,
        "out_features": out_features,
        "input": input,
        "weight": weight,
        **fields,
    }
    return Request("POST", "/layers/linear", body)


def rnn(
    input: TensorInput,
    hidden_size: int | None,
    *,
    input_size: int | None,
    h0: TensorInput | None,
    weights: Mapping[str, TensorInput] | None,
    **fields: Any,
) -> Request:
    """``POST /layers/rnn``: ``input_size`` defaults to the input's last dimension,
    ``hidden_size`` to that of ``h0``."""
    if input_size is None:
        input_size = _last_dim(input)
    if hidden_size is None and h0 is not None:
        hidden_size = _last_dim(h0)
    body = {
        "input": input,
        "input_size": input_size,
        "hidden_size": hidden_size,
        "h0": h0,
        "weights": None if weights is None else dict(weights),
        **fields,
    }
    return Request("POST", "/layers/rnn", body)


# --- vision ----------------------------------------------------------------------------------


def conv(
    image: ImageInput | None, *, kernels: Sequence[str | TensorInput] | None, **fields: Any
) -> Request:
    """``POST /conv``: a picture or a tensor (see :func:`picture_request`)."""
    return picture_request("/conv", image, {**fields, "kernels": _list(kernels)})


def pool(image: ImageInput | None, **fields: Any) -> Request:
    """``POST /pool``: a picture or a tensor (see :func:`picture_request`)."""
    return picture_request("/pool", image, fields)


def picture_request(path: str, image: ImageInput | None, fields: dict[str, Any]) -> Request:
    """A picture goes as the upload ``image`` with the other fields as form fields; a tensor
    (the field ``input``) as JSON. Either answer is large, so base64 is asked for."""
    if image is not None:
        if fields.get("input") is not None:
            raise ValueError("give `image` or `input`, not both")
        return Request("POST", path, fields, files=(("image", image_upload(image)),))
    if fields.get("input") is None:
        raise ValueError("give an `image` (a picture) or an `input` (a tensor)")
    return Request("POST", path, fields, large_output=True)


# --- regression ------------------------------------------------------------------------------


def linear_regression(
    csv: FileInput | None, *, features: Sequence[str] | None, **fields: Any
) -> Request:
    """``POST /regress/linear`` (see :func:`data_request`)."""
    return data_request("/regress/linear", csv, {**fields, "features": _list(features)})


def logistic_regression(
    csv: FileInput | None, *, features: Sequence[str] | None, **fields: Any
) -> Request:
    """``POST /regress/logistic`` (see :func:`data_request`)."""
    return data_request("/regress/logistic", csv, {**fields, "features": _list(features)})


def predict(model: ModelInput, x: TensorInput, *, device: str | None) -> Request:
    """``POST /regress/predict``: the model's JSON, from a fit's result, a fitted model or
    the JSON itself."""
    return Request(
        "POST", "/regress/predict", {"model": model_json(model), "x": x, "device": device}
    )


def model_json(model: ModelInput) -> dict[str, Any]:
    """The JSON of a fitted model given as a fit's result, a model, or its JSON."""
    if isinstance(model, LinearRegressionResult | LogisticRegressionResult):
        return model.model.raw
    if isinstance(model, RegressionModel):
        return model.raw
    if isinstance(model, Mapping):
        inner = model.get("model")
        return dict(inner) if isinstance(inner, Mapping) else dict(model)
    raise TypeError(f"expected a fitted model or a fit's result, got {type(model).__name__}")


# --- data ------------------------------------------------------------------------------------


def datasets() -> Request:
    """``GET /datasets``."""
    return Request("GET", "/datasets")


def data_loader(csv: FileInput | None, *, features: Sequence[str] | None, **fields: Any) -> Request:
    """``POST /data/loader`` (see :func:`data_request`)."""
    return data_request("/data/loader", csv, {**fields, "features": _list(features)})


def data_request(path: str, csv: FileInput | None, fields: dict[str, Any]) -> Request:
    """A CSV goes as the upload ``file`` with the other fields as form fields; arrays
    (``x``, ``y``) or a dataset's name as JSON."""
    if csv is not None:
        if fields.get("x") is not None or fields.get("dataset") is not None:
            raise ValueError("give `csv`, or `x` and `y`, or `dataset`: one of them")
        return Request("POST", path, fields, files=(("file", csv_upload(csv)),))
    return Request("POST", path, fields)


def images(
    images: ImageInput | Sequence[ImageInput] | None,
    *,
    archive: FileInput | None,
    labels: Sequence[str] | None,
    transforms: Sequence[Mapping[str, Any]] | None,
    **fields: Any,
) -> Request:
    """``POST /data/images``: pictures and archives go as uploads (``images``, ``archive``)
    with the other fields as form fields; a built-in dataset's name as JSON."""
    files: list[tuple[str, Upload]] = []
    if images is not None:
        items: Sequence[ImageInput] = images if isinstance(images, list | tuple) else [images]
        files += [("images", image_upload(item, i)) for i, item in enumerate(items)]
    if archive is not None:
        files.append(("archive", archive_upload(archive)))
    body = {
        **fields,
        "labels": _list(labels),
        "transforms": None if transforms is None else [dict(t) for t in transforms],
    }
    return Request("POST", "/data/images", body, files=tuple(files))


# --- helpers ---------------------------------------------------------------------------------


def _list(values: Iterable[T] | None) -> list[T] | None:
    return None if values is None else list(values)


def _shape_of(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    try:
        return tuple(int(s) for s in np.shape(value))
    except (ValueError, TypeError):
        return None


def _last_dim(value: Any) -> int | None:
    shape = _shape_of(value)
    return shape[-1] if shape else None
