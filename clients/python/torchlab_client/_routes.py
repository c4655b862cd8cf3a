"""Every route's request, built once for both clients and for both of its answers.

A client method hands its own arguments to its route's builder here, with
``arguments(locals())`` as its first statement: a method's parameters are the route's
fields, by name. A field the service adds to a route is therefore a new parameter of the
route's methods in ``_async_client`` and nothing more, unless it needs converting on the way
(a sequence to a list, a size inferred from a tensor), which the route's builder does.
Until the client has it, ``extra_fields={...}`` sends it.

Values arrive as people have them and leave as the service takes them: every field that
holds a tensor goes through :func:`~torchlab_client._codec.tensor_input` (numpy scalars
keep their dtype; DataFrames, Series and lists of arrays become arrays); a field that holds
a list of names takes one bare name as a list of one (never its characters); a table's
column names become the feature and target names of the answer (:class:`Columns`).

A route's JSON method and its ``_png`` twin send the same request, the twin's with
``format=png`` (:meth:`Request.as_png`); they differ only in how they read the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np

from torchlab_client import ops
from torchlab_client._codec import tensor_input
from torchlab_client._frames import column_names, labels_or_array, select_columns
from torchlab_client._images import (
    FileInput,
    ImageInput,
    Upload,
    archive_upload,
    csv_upload,
    image_upload,
)
from torchlab_client._names import item_list, name_list
from torchlab_client._types import (
    LinearRegressionResult,
    LogisticRegressionResult,
    RegressionModel,
)

TensorInput: TypeAlias = Any
"""A numpy array or scalar, a torch tensor, anything with ``__array__`` (a pandas DataFrame
or Series, ...), a list of arrays, a nested list of numbers, or a number."""
ModelInput: TypeAlias = (
    "RegressionModel | LinearRegressionResult | LogisticRegressionResult | Mapping[str, Any]"
)

_NOT_FIELDS = frozenset({"self", "as_torch", "progress"})


@dataclass(frozen=True)
class Columns:
    """The names of a table's columns, sent as ``x``/``y`` arrays: the service calls them
    ``x0``, ``x1``, … and ``y`` (``y0``, … for several targets); the answer is read with
    these names instead."""

    features: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None

    def rename(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the service's column names replaced by the table's."""
        features = {f"x{i}": name for i, name in enumerate(self.features or ())}
        targets = {f"y{i}": name for i, name in enumerate(self.targets or ())}
        if self.targets is not None and len(self.targets) == 1:
            targets["y"] = self.targets[0]
        renamed = dict(body)
        model = renamed.get("model")
        if isinstance(model, dict):
            renamed["model"] = {
                **model,
                **_renamed(model, "features", features),
                **_renamed(model, "targets", targets),
            }
        renamed.update(_renamed(body, "features", features))
        renamed.update(_renamed(body, "targets", targets))
        correlations = body.get("correlations")
        if isinstance(correlations, list):
            renamed["correlations"] = [
                {
                    **item,
                    "feature": _rename(item.get("feature"), features),
                    "target": _rename(item.get("target"), targets),
                }
                if isinstance(item, dict)
                else item
                for item in correlations
            ]
        return renamed


def _renamed(body: dict[str, Any], key: str, names: dict[str, str]) -> dict[str, Any]:
    values = body.get(key)
    if not names or not isinstance(values, list):
        return {}
    return {key: [_rename(value, names) for value in values]}


def _rename(value: Any, names: dict[str, str]) -> Any:
    return names.get(value, value) if isinstance(value, str) else value


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
    png: bool = False
    """Whether the answer is a picture (``format=png``)."""
    columns: Columns | None = None
    """The names of the columns of a table given as ``x``/``y``."""

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer's JSON body as the caller named things (a table's columns)."""
        return body if self.columns is None else self.columns.rename(body)

    def as_png(self) -> Request:
        """The same request, answered with a PNG picture."""
        return replace(self, fields={**self.fields, "format": "png"}, png=True)


def arguments(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A client method's arguments (its ``locals()``) as its route builder's keywords:
    without ``self`` and ``as_torch``, with ``extra_fields`` (fields this client does not
    know yet) spread out."""
    named = {key: value for key, value in scope.items() if key not in _NOT_FIELDS}
    extra = dict(named.pop("extra_fields", None) or {})
    clash = sorted(set(extra) & set(named))
    if clash:
        raise TypeError(
            f"extra_fields: {', '.join(clash)} is a parameter of this method; pass it as one"
        )
    return {**named, **extra}


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
    return Request("POST", "/benchmark", {**fields, "devices": name_list(devices)}, tensors=False)


# --- tensors and autograd --------------------------------------------------------------------


def tensor_ops(
    steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    inputs: Mapping[str, TensorInput] | None,
    returns: str | Sequence[str] | None,
    **fields: Any,
) -> Request:
    """``POST /tensor/ops``: one step or a list; ``returns`` goes as ``return``."""
    body = {
        "inputs": _tensors(inputs, "inputs"),
        "steps": [prepare_step(step) for step in item_list(steps) or []],
        "return": name_list(returns),
        **fields,
    }
    return Request("POST", "/tensor/ops", body)


def prepare_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A step as the service takes it: its tensor parameters through :func:`tensor_input`,
    a list of tensors (``cat``'s ``tensors``) a list even of one name, a dtype given as
    numpy's or torch's by its name."""
    op = step.get("op")
    prepared: dict[str, Any] = {}
    for key, given in step.items():
        where = f"step {op!r}: {key}"
        if key in ops.TENSOR_FIELDS:
            prepared[key] = tensor_input(given, where)
        elif key in ops.TENSOR_LIST_FIELDS and given is not None:
            prepared[key] = [tensor_input(item, where) for item in item_list(given) or []]
        elif key == "dtype" and given is not None and not isinstance(given, str):
            prepared[key] = dtype_name(given)
        else:
            prepared[key] = given
    return prepared


def dtype_name(value: Any) -> str:
    """The wire name of a dtype given as numpy's (``np.float32``) or torch's."""
    text = str(value)
    if text.startswith("torch."):
        return text.removeprefix("torch.")
    try:
        return str(np.dtype(value).name)
    except TypeError as exc:
        raise TypeError(f"not a dtype: {value!r}") from exc


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
        "inputs": _tensors({**(inputs or {}), **named_inputs}, "inputs"),
        "wrt": name_list(wrt),
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
        else [f if isinstance(f, str) else dict(f) for f in item_list(functions) or []],
        "x": tensor_input(x, "x"),
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
    input, weight = tensor_input(input, "input"), tensor_input(weight, "weight")
    fields["bias_values"] = tensor_input(fields.get("bias_values"), "bias_values")
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
    input, h0 = tensor_input(input, "input"), tensor_input(h0, "h0")
    fields["c0"] = tensor_input(fields.get("c0"), "c0")
    if input_size is None:
        input_size = _last_dim(input)
    if hidden_size is None and h0 is not None:
        hidden_size = _last_dim(h0)
    body = {
        "input": input,
        "input_size": input_size,
        "hidden_size": hidden_size,
        "h0": h0,
        "weights": _tensors(weights, "weights"),
        **fields,
    }
    return Request("POST", "/layers/rnn", body)


# --- vision ----------------------------------------------------------------------------------


def conv(
    image: ImageInput | None, *, kernels: str | Sequence[str | TensorInput] | None, **fields: Any
) -> Request:
    """``POST /conv``: a picture or a tensor (see :func:`picture_request`); one kernel (a
    name or a 2-D array) is a list of one."""
    listed = item_list(kernels)
    return picture_request(
        "/conv",
        image,
        {
            **fields,
            "kernels": None if listed is None else [tensor_input(k, "kernels") for k in listed],
            "bias_values": tensor_input(fields.get("bias_values"), "bias_values"),
        },
    )


def pool(image: ImageInput | None, **fields: Any) -> Request:
    """``POST /pool``: a picture or a tensor (see :func:`picture_request`)."""
    return picture_request("/pool", image, fields)


def picture_request(path: str, image: ImageInput | None, fields: dict[str, Any]) -> Request:
    """A picture goes as the upload ``image`` with the other fields as form fields; a tensor
    (the field ``input``) as JSON."""
    fields = {**fields, "input": tensor_input(fields.get("input"), "input")}
    if image is not None:
        if fields.get("input") is not None:
            raise ValueError("give `image` or `input`, not both")
        return Request("POST", path, fields, files=(("image", image_upload(image)),))
    if fields.get("input") is None:
        raise ValueError("give an `image` (a picture) or an `input` (a tensor)")
    return Request("POST", path, fields)


# --- regression ------------------------------------------------------------------------------


def linear_regression(csv: FileInput | None, **fields: Any) -> Request:
    """``POST /regress/linear`` (see :func:`data_request`)."""
    return data_request("/regress/linear", csv, fields)


def logistic_regression(csv: FileInput | None, **fields: Any) -> Request:
    """``POST /regress/logistic`` (see :func:`data_request`)."""
    return data_request("/regress/logistic", csv, fields)


def predict(model: ModelInput, x: TensorInput, *, device: str | None) -> Request:
    """``POST /regress/predict``: the model's JSON, from a fit's result, a fitted model or
    the JSON itself; a table's columns are taken in the model's feature order."""
    json_model = model_json(model)
    table = column_names(x) is not None
    x = _model(json_model).features_of(x) if table else tensor_input(x, "x")
    return Request("POST", "/regress/predict", {"model": json_model, "x": x, "device": device})


def _model(json_model: dict[str, Any]) -> RegressionModel:
    """A model's JSON as the model (for its feature names and shapes)."""
    from torchlab_client._parsers import regression_model  # noqa: PLC0415 (parsers import us)

    return regression_model(json_model, as_torch=False)


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


def data_loader(csv: FileInput | None, *, max_batches: int | str | None, **fields: Any) -> Request:
    """``POST /data/loader`` (see :func:`data_request`); ``max_batches="all"`` asks for
    as many batches as the service lists in one answer."""
    if max_batches == "all":
        max_batches = MAX_LISTED_BATCHES
    elif isinstance(max_batches, str):
        raise ValueError(f"max_batches is a number or 'all', not {max_batches!r}")
    return data_request("/data/loader", csv, {**fields, "max_batches": max_batches})


MAX_LISTED_BATCHES = 1000
"""The most batches one ``POST /data/loader`` answer lists (the service's ``max_batches``
limit)."""


def data_request(path: str, csv: FileInput | None, fields: dict[str, Any]) -> Request:
    """A CSV goes as the upload ``file`` with the other fields as form fields; arrays
    (``x``, ``y``) or a dataset's name as JSON.

    A table given as ``x`` (a DataFrame) is sent as an array; ``features`` then picks its
    columns here, and the answer names the features after them (and the targets after a
    named ``y``) instead of the service's ``x0``, ``x1``, …, ``y``."""
    fields = {**fields, "features": name_list(fields.get("features"))}
    if csv is not None:
        if fields.get("x") is not None or fields.get("dataset") is not None:
            raise ValueError("give `csv`, or `x` and `y`, or `dataset`: one of them")
        return Request("POST", path, fields, files=(("file", csv_upload(csv)),))
    x, y = fields.get("x"), fields.get("y")
    features, targets = column_names(x), column_names(y)
    if features is not None and fields["features"] is not None:
        x, features = select_columns(x, fields["features"], "x"), fields["features"]
        fields["features"] = None
    fields["x"] = tensor_input(x, "x")
    labels = labels_or_array(y)
    fields["y"] = labels if isinstance(labels, list) else tensor_input(labels, "y")
    columns = None
    if features is not None or targets is not None:
        columns = Columns(
            None if features is None else tuple(features),
            None if targets is None else tuple(targets),
        )
    return Request("POST", path, fields, columns=columns)


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
    listed = item_list(transforms)
    body = {
        **fields,
        "labels": name_list(labels),
        "transforms": None if listed is None else [dict(t) for t in listed],
    }
    return Request("POST", "/data/images", body, files=tuple(files))


# --- helpers ---------------------------------------------------------------------------------


def _tensors(values: Mapping[str, TensorInput] | None, where: str) -> dict[str, Any] | None:
    """Named tensors, each as :func:`tensor_input` takes it; None or empty: not sent."""
    if not values:
        return None
    return {name: tensor_input(value, f"{where}[{name!r}]") for name, value in values.items()}


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
