"""``/activate`` and ``/layers`` prepared and computed without HTTP: plans from request
models, refusals before any work, results against ``torch.nn`` modules built here."""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Iterator

import pytest
import torch
from PIL import Image
from torch import nn

from schemas.activations import ActivateRequest
from schemas.layers import LinearRequest, RNNRequest
from service.config import Limits
from service.errors import InvalidInput, LimitExceeded
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.nn.activations import ACTIVATIONS
from service.ops.nn.handlers import (
    activation_listing,
    compute_activate,
    compute_linear_layer,
    compute_rnn_layer,
    prepare_activate,
    prepare_linear_layer,
    prepare_rnn_layer,
)
from service.ops.render.plots import figure_size_px
from service.ops.render.png import Png

CPU = torch.device("cpu")


def context(**limits: int) -> ComputeContext:
    return ComputeContext(Limits(**limits), CPU)


def deadline() -> Deadline:
    return Deadline(60.0)


@pytest.fixture
def isolated_rng() -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        yield


# --- /activate -------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4096])
def test_the_listing_reports_the_given_points_limit(limit: int) -> None:
    listing = activation_listing(limit)
    assert listing.max_plot_points == limit
    assert [info.name for info in listing.functions] == [a.name for a in ACTIVATIONS]
    assert listing.default_functions == ["sigmoid", "tanh", "relu", "softplus"]


def test_activate_by_default_is_the_tutorials_four_over_its_linspace() -> None:
    ctx = context()
    plan = prepare_activate(ctx, ActivateRequest.model_validate({}))
    x = torch.linspace(-6, 6, 100)
    torch.testing.assert_close(plan.x, x)
    assert [bound.name for bound in plan.functions] == ["sigmoid", "tanh", "relu", "softplus"]
    assert ctx.budget.elements == 100 + 4 * 100  # x, then one output per function
    content = compute_activate(plan, deadline())
    assert isinstance(content, dict)
    modules = [nn.Sigmoid(), nn.Tanh(), nn.ReLU(), nn.Softplus()]
    for result, module in zip(content["results"], modules, strict=True):
        torch.testing.assert_close(result["y"], module(x))
        assert result["dydx"] is None


def test_activate_with_shared_params_dim_and_derivative() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    body = ActivateRequest.model_validate(
        {"functions": ["softmax", "leaky_relu"], "x": x.tolist(), "dim": 0, "derivative": True}
        | {"params": {"negative_slope": 0.3}}
    )
    plan = prepare_activate(context(), body)
    content = compute_activate(plan, deadline())
    assert isinstance(content, dict)
    softmax, leaky = content["results"]
    s = torch.softmax(x.float(), 0)
    assert softmax["params"] == {"dim": 0}
    torch.testing.assert_close(softmax["y"], s)
    torch.testing.assert_close(softmax["dydx"], s * (1 - s))
    assert leaky["params"] == {"negative_slope": 0.3}
    torch.testing.assert_close(leaky["y"], nn.LeakyReLU(0.3)(x.float()))


@pytest.mark.parametrize("function", [a.name for a in ACTIVATIONS])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bfloat16"])
@pytest.mark.parametrize("derivative", [False, True])
def test_an_activation_plan_knows_its_answers_tensors(
    function: str, dtype: str, derivative: bool
) -> None:
    # The response is sized from them before the work: they must be what the work answers.
    x = {"data": [[-2, -1, 0], [1, 2, 3]], "dtype": dtype}
    required = {"threshold": {"threshold": 0.5, "value": -1.0}}.get(function, {})
    body = ActivateRequest.model_validate(
        {"functions": [{"function": function, "params": required}, "relu"], "x": x}
        | {"derivative": derivative}
    )
    plan = prepare_activate(context(), body)
    content = compute_activate(plan, deadline())
    assert isinstance(content, dict)
    tensors = [
        result[name]
        for result in content["results"]
        for name in ("x", "y", "dydx")
        if result[name] is not None
    ]
    assert plan.answer == [(tuple(t.shape), t.dtype) for t in tensors]


def test_activate_as_png_draws_the_grid_it_announces() -> None:
    body = ActivateRequest.model_validate(
        {"functions": ["relu", "elu", "gelu"], "format": "png", "columns": 2, "derivative": True}
    )
    content = compute_activate(prepare_activate(context(), body), deadline())
    assert isinstance(content, Png)
    assert content.headers == {"X-Panel-Count": "3", "X-Panel-Layout": "2x2"}
    image = Image.open(io.BytesIO(content.data))
    assert image.format == "PNG"
    assert image.size == figure_size_px(3, 2)


def test_activate_refuses_a_figure_over_the_configured_points_before_evaluating() -> None:
    body = ActivateRequest.model_validate({"range": {"steps": 26}, "format": "png"})
    prepare_activate(context(max_plot_points=4 * 26), body)
    with pytest.raises(LimitExceeded) as caught:
        prepare_activate(context(max_plot_points=4 * 26 - 1), body)
    assert caught.value.details == {
        "limit": "max_plot_points",
        "allowed": 4 * 26 - 1,
        "requested": 4 * 26,
    }
    json_body = ActivateRequest.model_validate({"range": {"steps": 26}})
    prepare_activate(context(max_plot_points=1), json_body)  # JSON draws nothing


def test_activate_refusals_happen_in_prepare() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare_activate(context(), ActivateRequest.model_validate({"function": "swish"}))
    assert caught.value.code == "unknown_function"
    with pytest.raises(LimitExceeded) as limit:
        prepare_activate(
            context(max_total_elements=150),
            ActivateRequest.model_validate({"function": "relu", "range": {"steps": 100}}),
        )
    assert limit.value.details["limit"] == "max_total_elements"


# --- /layers ---------------------------------------------------------------------------------


def test_linear_layer_with_given_parameters_is_nn_linear() -> None:
    generator = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(*shape, generator=generator) for shape in ((5, 3), (2, 3), (2,)))
    body = LinearRequest.model_validate(
        {
            "in_features": 3,
            "out_features": 2,
            "input": x.tolist(),
            "weight": w.tolist(),
            "bias_values": b.tolist(),
        }
    )
    content = compute_linear_layer(prepare_linear_layer(context(), body), deadline())
    reference = nn.Linear(3, 2)
    with torch.no_grad():
        reference.weight.copy_(w)
        reference.bias.copy_(b)
        torch.testing.assert_close(content["output"], reference(x))
    torch.testing.assert_close(content["weight"], w)
    torch.testing.assert_close(content["bias"], b)


@pytest.mark.parametrize("shape", [[3], [5, 3], [2, 4, 3]])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "float16"])
def test_a_linear_plan_knows_its_answers_tensors(shape: list[int], bias: bool, dtype: str) -> None:
    # The response is sized from them before the work: they must be what the work answers.
    x = torch.arange(math.prod(shape)).reshape(shape)
    body = LinearRequest.model_validate(
        {
            "in_features": 3,
            "out_features": 2,
            "bias": bias,
            "input": {"data": x.tolist(), "dtype": dtype},
            "seed": 0,
        }
    )
    plan = prepare_linear_layer(context(), body)
    content = compute_linear_layer(plan, deadline())
    tensors = [content[name] for name in ("output", "weight", "bias") if content[name] is not None]
    assert plan.answer == [(tuple(t.shape), t.dtype) for t in tensors]


def test_linear_layer_is_refused_in_prepare() -> None:
    body = LinearRequest.model_validate({"in_features": 4, "out_features": 2, "input": [1.0]})
    with pytest.raises(InvalidInput) as caught:
        prepare_linear_layer(context(), body)
    assert caught.value.code == "shape_mismatch"
    wide = LinearRequest.model_validate({"in_features": 1, "out_features": 100, "input": [1.0]})
    with pytest.raises(LimitExceeded) as limit:
        prepare_linear_layer(context(max_elements=64), wide)
    assert limit.value.details["limit"] == "max_elements"


def test_rnn_layer_is_the_seeded_torch_module(isolated_rng: None) -> None:
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    body = RNNRequest.model_validate(
        {"mode": "lstm", "input_size": 3, "hidden_size": 5, "input": x.tolist(), "seed": 11}
    )
    content = compute_rnn_layer(prepare_rnn_layer(context(), body), deadline())
    torch.manual_seed(11)
    reference = nn.LSTM(3, 5)
    with torch.no_grad():
        output, (h_n, c_n) = reference(x)
    torch.testing.assert_close(content["output"], output)
    torch.testing.assert_close(content["h_n"], h_n)
    torch.testing.assert_close(content["c_n"], c_n)
    expected = {name: list(p.shape) for name, p in reference.named_parameters()}
    assert content["parameters"] == expected
    assert set(content["weights"]) == set(expected)
    quiet = RNNRequest.model_validate({**body.model_dump(), "return_weights": False})
    assert compute_rnn_layer(prepare_rnn_layer(context(), quiet), deadline())["weights"] is None


@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layout", ["unbatched", "batched", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_rnn_plan_knows_its_answers_tensors(
    mode: str, layout: str, bidirectional: bool, return_weights: bool, dtype: torch.dtype
) -> None:
    # The response is sized from them before the work: they must be what the work answers.
    shape = {"unbatched": [4, 3], "batched": [4, 2, 3], "batch_first": [2, 4, 3]}[layout]
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    body = RNNRequest.model_validate(
        {
            "mode": mode,
            "input_size": 3,
            "hidden_size": 5,
            "num_layers": 2,
            "bidirectional": bidirectional,
            "batch_first": layout == "batch_first",
            "input": {"data": x.tolist(), "dtype": str(dtype).removeprefix("torch.")},
            "return_weights": return_weights,
            "seed": 0,
        }
    )
    plan = prepare_rnn_layer(context(), body)
    content = compute_rnn_layer(plan, deadline())
    tensors = [content["output"], content["h_n"]]
    if content["c_n"] is not None:
        tensors.append(content["c_n"])
    tensors.extend((content["weights"] or {}).values())
    assert plan.answer == [(tuple(t.shape), t.dtype) for t in tensors]


def test_rnn_layer_is_refused_in_prepare() -> None:
    body = RNNRequest.model_validate(
        {"mode": "gru", "input_size": 3, "hidden_size": 4, "input": [[1.0, 2.0, 3.0]]}
        | {"c0": [[0.0, 0.0, 0.0, 0.0]]}
    )
    with pytest.raises(InvalidInput) as caught:
        prepare_rnn_layer(context(), body)
    assert caught.value.code == "unexpected_argument"


# --- plans for another process ---------------------------------------------------------------


def test_plans_are_plain_data_that_pickle() -> None:
    plans = [
        prepare_activate(context(), ActivateRequest.model_validate({"derivative": True})),
        prepare_linear_layer(
            context(),
            LinearRequest.model_validate({"in_features": 2, "out_features": 1, "input": [1, 2]}),
        ),
        prepare_rnn_layer(
            context(),
            RNNRequest.model_validate(
                {"mode": "rnn", "input_size": 2, "hidden_size": 2, "input": [[1.0, 2.0]]}
            ),
        ),
    ]
    for plan in plans:
        copy = pickle.loads(pickle.dumps(plan))
        assert type(copy) is type(plan)
        assert copy.device == plan.device
