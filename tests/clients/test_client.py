"""Every method of Client and AsyncClient against the real app in-process: Starlette's
TestClient under the blocking client, ``httpx.ASGITransport`` under the async one.

Each scenario runs through both clients. Scenarios of routes the service does not have yet
(vision, regression, data) skip with the reason and run by themselves once those land.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torchlab_client as tl
from fastapi import FastAPI
from PIL import Image
from torchlab_client._base import ResponseEncoding

from tests.clients.conftest import needs, run_async
from tests.conftest import FAST_CALIBRATION, app_without_lifespan, make_settings

EXAM_HOURS = [
    0.50, 0.75, 1.00, 1.25, 1.50, 1.75, 1.75, 2.00, 2.25, 2.50,
    2.75, 3.00, 3.25, 3.50, 4.00, 4.25, 4.50, 4.75, 5.00, 5.50,
]  # fmt: skip
EXAM_SCORES = [10, 22, 13, 43, 20, 22, 33, 50, 62, 48, 55, 75, 62, 73, 81, 76, 64, 82, 90, 93]
PICTURE = np.random.default_rng(3).integers(0, 255, (24, 36), endpoint=True).astype(np.uint8)
EDGE = -np.ones((5, 5), np.float32)
EDGE[2, 2] = 24


@dataclass(frozen=True)
class Scenario:
    """One call of a client method and what its result must satisfy."""

    id: str
    method: str
    check: Callable[[Any], object]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    routes: tuple[str, ...] = ()


def png_check(width: int | None = None, height: int | None = None) -> Callable[[Any], object]:
    def check(picture: Any) -> None:
        assert isinstance(picture, tl.PNGImage)
        with Image.open(io.BytesIO(picture.data)) as image:
            image.verify()
        if width is not None:
            assert picture.width == width
        if height is not None:
            assert picture.height == height

    return check


# --- checks, one per scenario, with references computed here --------------------------------


def check_info(info: tl.ServiceInfo) -> None:
    assert info.name == "torchlab"
    assert info.default_device in {d.name for d in info.devices}
    assert info.limits["max_elements"] == make_settings().limits.max_elements
    assert not info.auth_required


def check_benchmark(result: tl.BenchmarkResult) -> None:
    assert (result.m, result.k, result.n) == (64, 32, 16)
    assert result.flops_per_run == 2 * 64 * 32 * 16
    assert [timing.device for timing in result.results] == ["cpu"]
    timing = result.results[0]
    assert timing.norm > 0
    assert timing.min_s <= timing.median_s <= timing.max_s


def check_chapter_3(outputs: tl.TensorOpsResult) -> None:
    t3 = np.arange(16).reshape(2, 2, -1)
    a = np.array([[1, 2], [3, 4]])
    # Issue 15: the tensors are a typed mapping; what info steps return is in .info.
    assert set(outputs) == {"s", "c"}
    assert set(outputs.info) == {"i"}
    np.testing.assert_array_equal(outputs["s"], t3[:, 1, :-1])
    assert outputs["s"].dtype == np.int64
    np.testing.assert_array_equal(outputs["c"], np.concatenate([a, a]))
    assert outputs.info["i"]["shape"] == [2, 2, 4]
    assert outputs.info["i"].stride == (8, 4, 1)


def check_chapter_5(result: tl.GradResult) -> None:
    value, grads = result
    assert float(value) == 54.0
    x = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    np.testing.assert_array_equal(grads["x"], 2 * x + 2)
    assert grads["x"].dtype == np.float32
    assert result.hessians is None


def check_hessian(result: tl.GradResult) -> None:
    assert result.hessians is not None
    np.testing.assert_allclose(result.hessians["x"]["x"], 2 * np.eye(3))
    np.testing.assert_allclose(result.grads["x"], 2 * np.array([1.0, 2.0, 3.0]))


def check_activate(results: tl.ActivationResults) -> None:
    x = np.linspace(-6, 6, 7, dtype=np.float32)
    assert [r.function for r in results] == ["sigmoid", "leaky_relu"]
    sigmoid = results["sigmoid"]
    np.testing.assert_allclose(sigmoid.y, 1 / (1 + np.exp(-x)), rtol=1e-6)
    assert sigmoid.dydx is not None
    np.testing.assert_allclose(sigmoid.dydx, sigmoid.y * (1 - sigmoid.y), rtol=1e-5)
    leaky = results[1]
    assert leaky.params["negative_slope"] == 0.2
    np.testing.assert_allclose(leaky.y, np.where(x > 0, x, 0.2 * x))


def check_linear_layer(result: tl.LinearLayerResult) -> None:
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], dtype=np.float32)
    w = np.array([[0.5, -0.5, 1.0], [1.0, 0.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(result.output, x @ w.T + [0.1, -0.1], rtol=1e-6)
    np.testing.assert_array_equal(result.weight, w)
    assert result.bias is not None


def check_rnn(result: tl.RNNResult) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2)
    x = torch.from_numpy(RNN_INPUT)
    with torch.no_grad():
        output, (h_n, c_n) = lstm(x)
    np.testing.assert_allclose(result.output, output.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.h_n, h_n.numpy(), rtol=1e-5, atol=1e-6)
    assert result.c_n is not None
    np.testing.assert_allclose(result.c_n, c_n.numpy(), rtol=1e-5, atol=1e-6)
    assert result.parameters["weight_ih_l0"] == (16, 3)
    assert result.weights is not None
    expected = lstm.state_dict()["weight_hh_l1"].numpy()
    np.testing.assert_allclose(result.weights["weight_hh_l1"], expected)


RNN_INPUT = np.random.default_rng(4).standard_normal((5, 2, 3)).astype(np.float32)


def correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """torch's conv2d (cross-correlation, no padding) with one kernel, in float64."""
    kh, kw = kernel.shape
    windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (kh, kw))
    result: np.ndarray = np.einsum("ijkl,kl->ij", windows, kernel)
    return result


def check_conv_picture(result: tl.ConvResult) -> None:
    assert result.output.shape == (1, 2, 20, 32)
    assert result.output.dtype == np.float32
    assert result.kernels == ["edge", "random"]
    assert result.input_shape == (1, 1, 24, 36)
    np.testing.assert_allclose(result.output[0, 0], correlate(PICTURE, EDGE), rtol=1e-5)
    assert result.weight is not None
    np.testing.assert_array_equal(result.weight[0, 0], EDGE)


def check_conv_tensor(result: tl.ConvResult) -> None:
    laplacian = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    expected = correlate(CONV_INPUT, laplacian)
    np.testing.assert_allclose(result.output[0, 0], expected)
    assert result.output.dtype == np.float64


CONV_INPUT = np.random.default_rng(5).standard_normal((6, 7))


def check_pool(result: tl.PoolResult) -> None:
    expected = POOL_INPUT.reshape(1, 2, 3, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(result.output, expected)


POOL_INPUT = np.random.default_rng(6).standard_normal((1, 2, 6, 8)).astype(np.float32)


def check_pool_picture(result: tl.PoolResult) -> None:
    expected = PICTURE.astype(np.float64).reshape(4, 6, 6, 6).mean(axis=(1, 3))
    np.testing.assert_allclose(result.output[0, 0], expected, rtol=1e-6)


def check_exam_fit(result: tl.LinearRegressionResult) -> None:
    slope, intercept = np.polyfit(EXAM_HOURS, EXAM_SCORES, 1)
    np.testing.assert_allclose(np.ravel(result.model.coef), [slope], rtol=1e-9)
    np.testing.assert_allclose(float(result.model.intercept), intercept, rtol=1e-9)
    r = np.corrcoef(EXAM_HOURS, EXAM_SCORES)[0, 1]
    assert result.pearson_r == pytest.approx(r)
    assert result.correlation == "strong"
    assert result.n_train == 20
    assert result.metrics["r2"] == pytest.approx(r**2)


def check_csv_fit(result: tl.LinearRegressionResult) -> None:
    assert result.model.features == ["a", "b"]
    np.testing.assert_allclose(np.ravel(result.model.coef), [2.0, -1.0], atol=1e-9)
    assert float(result.model.intercept) == pytest.approx(0.5)


def check_gd_fit(result: tl.LinearRegressionResult) -> None:
    assert result.loss_history is not None
    assert result.loss_history.shape == (200,)
    assert result.loss_history[-1] < result.loss_history[0]


def check_logistic(result: tl.LogisticRegressionResult) -> None:
    assert result.model.kind == "logistic"
    assert result.model.classes == [0, 1]
    assert result.metrics["accuracy"] >= 0.8
    assert result.loss_history is not None


def check_datasets(datasets: list[tl.DatasetInfo]) -> None:
    names = {d.name for d in datasets}
    expected = {"exam", "iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud"}
    assert expected | {"sample_images"} <= names
    iris = next(d for d in datasets if d.name == "iris")
    assert (iris.n_samples, iris.n_features, iris.task) == (150, 4, "classification")


def check_iris_loader(result: tl.LoaderResult) -> None:
    assert (result.n_samples, result.n_features) == (150, 4)
    assert (result.x_dtype, result.y_dtype) == ("float32", "int64")
    batch = result.batches[0]
    assert batch.x_shape == (10, 4)
    assert batch.y_shape == (10,)
    assert batch.x is not None
    assert batch.y is not None
    assert batch.x.dtype == np.float32
    assert batch.y.dtype == np.int64


def check_diabetes_loader(result: tl.LoaderResult) -> None:
    assert (result.x_dtype, result.y_dtype) == ("float32", "float32")
    assert result.batches[0].x_shape == (64, 10)
    assert result.batches[0].x is None


def check_digits(result: tl.ImagesResult) -> None:
    assert result.classes == [str(d) for d in range(10)]
    assert result.class_to_idx["3"] == 3
    assert sum(result.counts.values()) == result.n_images
    assert result.batch is not None
    assert result.batch.x_shape == (16, 1, 8, 8)
    assert result.batch.x_dtype == "float32"
    assert result.mean is not None
    assert result.std is not None


def check_uploaded_images(result: tl.ImagesResult) -> None:
    assert result.classes == ["a", "b"]
    assert result.counts == {"a": 1, "b": 1}
    assert result.batch is not None
    assert result.batch.x_shape == (2, 3, 8, 8)
    assert result.batch.x is not None
    assert result.batch.x.dtype == np.float32


TRANSFORMS = [
    {"name": "Resize", "size": [8, 8]},
    {"name": "ToImage"},
    {"name": "ToDtype", "dtype": "float32", "scale": True},
]
PROGRAM = [
    {"op": "arange", "end": 16, "out": "t3"},
    {"op": "reshape", "x": "t3", "shape": [2, 2, -1], "out": "t3"},
    {"op": "index", "x": "t3", "index": "[:, 1, :-1]", "out": "s"},
    {"op": "cat", "tensors": ["a", "a"], "dim": 0, "out": "c"},
    {"op": "info", "x": "t3", "out": "i"},
]
LINEAR_MODEL = {
    "kind": "linear",
    "coef": [17.9],
    "intercept": 5.5,
    "features": ["hours"],
    "targets": ["score"],
}
SEPARABLE_X = [[0.1 * i] for i in range(40)]
SEPARABLE_Y = [int(i >= 20) for i in range(40)]

SCENARIOS = [
    Scenario("health", "health", lambda h: h.ok or pytest.fail("not ok")),
    Scenario("info", "info", check_info),
    Scenario("metrics", "metrics", lambda text: "torchlab_requests_total" in text or pytest.fail()),
    Scenario("openapi", "openapi", lambda doc: "/tensor/ops" in doc["paths"] or pytest.fail()),
    Scenario(
        "benchmark",
        "benchmark",
        check_benchmark,
        (64, 32, 16),
        {"devices": ["cpu"], "repeats": 2, "warmup": 0, "seed": 0},
    ),
    Scenario(
        "tensor_ops",
        "tensor_ops",
        check_chapter_3,
        (PROGRAM, {"a": np.array([[1, 2], [3, 4]])}, ["s", "c", "i"]),
    ),
    Scenario(
        "grad",
        "grad",
        check_chapter_5,
        ("sum(x**2 + 2*x + 1)",),
        {"x": [[1.0], [2.0], [3.0], [4.0]]},
    ),
    Scenario(
        "grad_hessian",
        "grad",
        check_hessian,
        ("sum(x**2)",),
        {"wrt": "x", "hessian": True, "inputs": {"x": np.array([1.0, 2.0, 3.0])}},
    ),
    Scenario(
        "activate",
        "activate",
        check_activate,
        (["sigmoid", {"function": "LeakyReLU", "params": {"negative_slope": 0.2}}],),
        {"x_range": (-6, 6, 7), "derivative": True},
    ),
    Scenario(
        "activate_png",
        "activate_png",
        png_check(700, 300),
        (["relu", "tanh"],),
        {"x": np.linspace(-1, 1, 9), "derivative": True},
    ),
    Scenario(
        "list_activations",
        "list_activations",
        lambda listing: {"relu", "softplus", "leaky_relu"} <= set(listing.names()) or pytest.fail(),
    ),
    Scenario(
        "linear_layer",
        "linear_layer",
        check_linear_layer,
        (np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], dtype=np.float32),),
        {
            "weight": np.array([[0.5, -0.5, 1.0], [1.0, 0.0, -1.0]], dtype=np.float32),
            "bias_values": [0.1, -0.1],
        },
    ),
    Scenario("rnn", "rnn", check_rnn, (RNN_INPUT, 4), {"mode": "lstm", "num_layers": 2, "seed": 0}),
    Scenario(
        "conv_picture",
        "conv",
        check_conv_picture,
        (PICTURE,),
        {"kernels": ["edge", "random"], "seed": 0},
        ("/conv",),
    ),
    Scenario(
        "conv_tensor",
        "conv",
        check_conv_tensor,
        (),
        {"input": CONV_INPUT, "kernels": [[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]},
        ("/conv",),
    ),
    Scenario(
        "conv_png",
        "conv_png",
        png_check(),
        (PICTURE,),
        {"kernels": ["sobel_x"], "kernel_size": 3},
        ("/conv",),
    ),
    Scenario(
        "pool_tensor",
        "pool",
        check_pool,
        (),
        {"input": POOL_INPUT, "kind": "max", "kernel_size": 2, "stride": 2},
        ("/pool",),
    ),
    Scenario(
        "pool_picture",
        "pool",
        check_pool_picture,
        (tl.PNGImage(tl.encode_png(PICTURE)),),
        {"kind": "adaptive_avg", "output_size": [4, 6]},
        ("/pool",),
    ),
    Scenario(
        "pool_png",
        "pool_png",
        png_check(),
        (PICTURE,),
        {"kind": "avg", "kernel_size": 2},
        ("/pool",),
    ),
    Scenario(
        "linear_regression_dataset",
        "linear_regression",
        check_exam_fit,
        (),
        {"dataset": "exam"},
        ("/regress/linear",),
    ),
    Scenario(
        "linear_regression_arrays",
        "linear_regression",
        check_exam_fit,
        (np.array(EXAM_HOURS), np.array(EXAM_SCORES, dtype=np.float64)),
        {},
        ("/regress/linear",),
    ),
    Scenario(
        "linear_regression_csv",
        "linear_regression",
        check_csv_fit,
        (),
        {"csv": b"a,b,y\n1,0,2.5\n0,1,-0.5\n1,1,1.5\n2,1,3.5\n", "target": "y"},
        ("/regress/linear",),
    ),
    Scenario(
        "linear_regression_gd",
        "linear_regression",
        check_gd_fit,
        (),
        {"dataset": "exam", "method": "gd", "epochs": 200, "lr": 0.1, "seed": 0},
        ("/regress/linear",),
    ),
    Scenario(
        "linear_regression_png",
        "linear_regression_png",
        png_check(),
        (),
        {"dataset": "exam"},
        ("/regress/linear",),
    ),
    Scenario(
        "logistic_regression",
        "logistic_regression",
        check_logistic,
        (SEPARABLE_X, SEPARABLE_Y),
        {"threshold": 0.5},
        ("/regress/logistic",),
    ),
    Scenario(
        "logistic_regression_png",
        "logistic_regression_png",
        png_check(),
        (),
        {"dataset": "iris", "features": ["petal length (cm)", "petal width (cm)"]},
        ("/regress/logistic",),
    ),
    Scenario(
        "predict",
        "predict",
        lambda p: np.testing.assert_allclose(p.y, [17.9 * 1.0 + 5.5, 17.9 * 2.5 + 5.5]),
        (LINEAR_MODEL, [1.0, 2.5]),
        {},
        ("/regress/predict",),
    ),
    Scenario("datasets", "datasets", check_datasets, (), {}, ("/datasets",)),
    Scenario(
        "data_loader_iris",
        "data_loader",
        check_iris_loader,
        ("iris",),
        {"batch_size": 10, "shuffle": True, "seed": 0, "include_data": True},
        ("/data/loader",),
    ),
    Scenario(
        "data_loader_diabetes",
        "data_loader",
        check_diabetes_loader,
        ("diabetes",),
        {"task": "regression", "batch_size": 64},
        ("/data/loader",),
    ),
    Scenario(
        "images_dataset",
        "images",
        check_digits,
        (),
        {"dataset": "digits", "batch_size": 16, "seed": 0},
        ("/data/images",),
    ),
    Scenario(
        "images_upload",
        "images",
        check_uploaded_images,
        ([PICTURE, tl.encode_png(PICTURE[:10, :10])],),
        {"labels": ["a", "b"], "transforms": TRANSFORMS, "mode": "RGB", "include_data": True},
        ("/data/images",),
    ),
    Scenario(
        "images_png",
        "images_png",
        png_check(),
        (),
        {"dataset": "digits", "max_images": 8, "seed": 0},
        ("/data/images",),
    ),
]


def scenario_params() -> list[Any]:
    params = []
    for scenario in SCENARIOS:
        for mode in ("sync", "async"):
            params.append(
                pytest.param(
                    scenario, mode, id=f"{scenario.id}-{mode}", marks=needs(*scenario.routes)
                )
            )
    return params


@pytest.mark.parametrize(("scenario", "mode"), scenario_params())
def test_every_method(scenario: Scenario, mode: str, sync_client: tl.Client, app: FastAPI) -> None:
    if mode == "sync":
        result = getattr(sync_client, scenario.method)(*scenario.args, **scenario.kwargs)
    else:

        async def call(client: tl.AsyncClient) -> Any:
            return await getattr(client, scenario.method)(*scenario.args, **scenario.kwargs)

        result = run_async(app, call)
    scenario.check(result)


def test_both_clients_have_the_same_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        import inspect  # noqa: PLC0415

        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in {"close", "aclose"}
        }

    assert public(tl.Client) == public(tl.AsyncClient)
    covered = {scenario.method for scenario in SCENARIOS}
    assert covered == set(public(tl.Client))


@needs("/regress/linear", "/regress/predict")
def test_predict_with_a_fit(sync_client: tl.Client) -> None:
    fit = sync_client.linear_regression(EXAM_HOURS, EXAM_SCORES)
    x = np.array([1.0, 3.0, 5.0])
    expected = float(np.ravel(fit.model.coef)[0]) * x + float(fit.model.intercept)
    for model in (fit, fit.model, fit.model.raw, fit.raw):
        prediction = sync_client.predict(model, x)
        np.testing.assert_allclose(prediction.y, expected, rtol=1e-12)
        assert prediction.proba is None


@needs("/regress/logistic", "/regress/predict")
def test_predict_with_a_logistic_model_of_string_labels(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> tl.Prediction:
        labels = ["fail" if y == 0 else "pass" for y in SEPARABLE_Y]
        fit = await client.logistic_regression(np.array(SEPARABLE_X), labels)
        assert fit.model.classes == ["fail", "pass"]
        return await client.predict(fit, [[0.0], [3.9]])

    prediction = run_async(app, scenario)
    # Issue 15: labels are an array (numpy strings here), as scikit-learn's predict gives.
    assert prediction.y.tolist() == ["fail", "pass"]
    assert prediction.proba is not None
    assert prediction.proba.shape == (2, 2)
    np.testing.assert_allclose(prediction.proba.sum(axis=1), 1.0)


@needs("/data/images")
def test_images_from_a_folder(sync_client: tl.Client, tmp_path: Any) -> None:
    for name, value in (("dark", 10), ("light", 240)):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.png").write_bytes(
                tl.encode_png(np.full((5, 5), value, np.uint8))
            )
    result = sync_client.images(archive=tmp_path, mode="L", batch_size=4)
    assert result.class_to_idx == {"dark": 0, "light": 1}
    assert result.counts == {"dark": 2, "light": 2}


@needs("/conv", "/pool")
def test_pool_a_convolution(sync_client: tl.Client) -> None:
    conv = sync_client.conv(PICTURE, kernels=["edge", "random"], seed=0)
    pooled = sync_client.pool(input=conv.output, kind="max", kernel_size=2, stride=2)
    assert pooled.output.shape == (1, 2, 10, 16)
    inline = sync_client.conv(
        PICTURE,
        kernels=["edge", "random"],
        seed=0,
        pool={"kind": "max", "kernel_size": 2, "stride": 2},
    )
    np.testing.assert_array_equal(inline.output, pooled.output)


# --- tensors in and out ----------------------------------------------------------------------

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def sample(dtype: str) -> np.ndarray:
    from tests.clients.test_codec import sample as make  # noqa: PLC0415

    return make(dtype, (4, 5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("request_form", ["json", "b64"])
@pytest.mark.parametrize("response_encoding", ["json", "b64"])
def test_numpy_round_trip(
    dtype: str, request_form: str, response_encoding: ResponseEncoding, test_client: Any
) -> None:
    array = sample(dtype)
    threshold = 0 if request_form == "b64" else 1 << 20
    with tl.Client(
        http_client=test_client, b64_threshold=threshold, response_encoding=response_encoding
    ) as client:
        out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
        assert out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)
        if np.dtype(dtype).kind == "f":
            assert np.isnan(out.flat[0])
            assert out.flat[1] == np.inf
            assert out.flat[2] == -np.inf


@pytest.mark.parametrize(
    "dtype",
    [
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
    ],
)
@pytest.mark.parametrize("response_encoding", ["json", "b64"])
def test_torch_round_trip(
    dtype: torch.dtype, response_encoding: ResponseEncoding, test_client: Any
) -> None:
    tensor = (torch.arange(-6, 6).reshape(3, 4) * 3).to(dtype)
    with tl.Client(
        http_client=test_client, response_encoding=response_encoding, as_torch=True
    ) as client:
        out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": tensor})["out"]
        assert isinstance(out, torch.Tensor)
        assert out.dtype == dtype
        assert torch.equal(out, tensor)
        # Per call, numpy again: bfloat16 arrives as float32.
        array = client.tensor_ops({"op": "clone", "x": "a"}, {"a": tensor}, as_torch=False)["out"]
        assert isinstance(array, np.ndarray)
        expected = torch.float32 if dtype == torch.bfloat16 else dtype
        assert str(array.dtype) == str(expected).removeprefix("torch.")


def test_plain_lists_are_inferred_as_torch_does(sync_client: tl.Client) -> None:
    out = sync_client.tensor_ops(
        [
            {"op": "clone", "x": "i", "out": "i"},
            {"op": "clone", "x": "f", "out": "f"},
            {"op": "clone", "x": "b", "out": "b"},
        ],
        {"i": [[1, 2], [3, 4]], "f": [1.5, math.nan, -math.inf], "b": [True, False]},
        ["i", "f", "b"],
    )
    assert out["i"].dtype == np.int64
    assert out["f"].dtype == np.float32
    assert np.isnan(out["f"][1])
    assert out["f"][2] == -np.inf
    assert out["b"].dtype == np.bool_


def test_inline_tensors_in_steps_are_encoded(sync_client: tl.Client) -> None:
    y = np.arange(3, dtype=np.int32)
    out = sync_client.tensor_ops({"op": "add", "x": np.ones(3, np.int32), "y": y, "out": "z"})
    assert out["z"].dtype == np.int32
    np.testing.assert_array_equal(out["z"], y + 1)


@pytest.mark.parametrize(("dtype", "threshold"), [("uint8", 64), ("float32", 64), ("float64", 40)])
def test_raw_bytes_above_the_threshold(
    dtype: str, threshold: int, recorded: tuple[Any, Any]
) -> None:
    # Issue 11: above the threshold a tensor goes as raw bytes after the JSON (the binary
    # data extension), and the answer is asked for in binary.
    test_client, recorder = recorded
    itemsize = np.dtype(dtype).itemsize
    with tl.Client(http_client=test_client, b64_threshold=threshold) as client:
        for count, binary in ((threshold // itemsize, False), (threshold // itemsize + 1, True)):
            array = np.arange(count).astype(dtype)
            out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
            np.testing.assert_array_equal(out, array)
            sent = recorder.last
            assert sent.url.params.get("encoding") == "binary"
            if not binary:
                assert "Inference-Header-Content-Length" not in sent.headers
                assert sent.headers["content-type"] == "application/json"
                body = json.loads(sent.content)
                assert "data" in body["inputs"]["a"], (count, body["inputs"]["a"])
                assert "b64" not in body["inputs"]["a"]
                continue
            length = int(sent.headers["Inference-Header-Content-Length"])
            assert sent.headers["content-type"] == "application/octet-stream"
            body = json.loads(sent.content[:length])
            assert body["inputs"]["a"] == {
                "shape": [count],
                "dtype": dtype,
                "binary_data_size": array.nbytes,
            }
            assert sent.content[length:] == array.astype(array.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize(("dtype", "threshold"), [("uint8", 64), ("float32", 64), ("float64", 40)])
def test_b64_switches_above_the_threshold_without_binary(
    dtype: str, threshold: int, recorded: tuple[Any, Any]
) -> None:
    test_client, recorder = recorded
    itemsize = np.dtype(dtype).itemsize
    with tl.Client(http_client=test_client, b64_threshold=threshold, binary=False) as client:
        for count, b64 in ((threshold // itemsize, False), (threshold // itemsize + 1, True)):
            array = np.arange(count).astype(dtype)
            out = client.tensor_ops({"op": "clone", "x": "a"}, {"a": array})["out"]
            np.testing.assert_array_equal(out, array)
            sent = recorder.last
            assert "Inference-Header-Content-Length" not in sent.headers
            body = json.loads(sent.content)
            assert ("b64" in body["inputs"]["a"]) is b64, (count, body["inputs"]["a"])
            assert ("data" in body["inputs"]["a"]) is not b64
            # Issue 15: answers come in base64 whatever the size of the request.
            assert sent.url.params.get("encoding") == "b64"


def test_response_encoding_can_be_forced(recorded: tuple[Any, Any]) -> None:
    test_client, recorder = recorded
    settings: tuple[tuple[ResponseEncoding, str | None], ...] = (("json", None), ("b64", "b64"))
    for setting, expected in settings:
        with tl.Client(
            http_client=test_client, response_encoding=setting, b64_threshold=0
        ) as client:
            client.tensor_ops({"op": "ones", "size": [2]})
            assert recorder.last.url.params.get("encoding") == expected
    with pytest.raises(ValueError, match="response_encoding"):
        tl.Client(http_client=test_client, response_encoding="xml")  # type: ignore[arg-type]


@needs("/conv")
def test_pictures_go_as_multipart_and_ask_for_binary(recorded: tuple[Any, Any]) -> None:
    test_client, recorder = recorded
    outputs = []
    for binary, encoding in ((True, "binary"), (False, "b64")):
        with tl.Client(http_client=test_client, binary=binary) as client:
            out = client.conv(PICTURE, kernels=["edge", np.eye(3)], kernel_size=3, seed=0)
        sent = recorder.last
        assert sent.headers["content-type"].startswith("multipart/form-data")
        assert "Inference-Header-Content-Length" not in sent.headers
        assert sent.url.params.get("encoding") == encoding
        assert b'name="image"; filename="image.png"' in sent.content
        assert b'name="kernels"' in sent.content
        assert b'["edge",{"data":[[1.0,0.0,0.0],[0.0,1.0,0.0],[0.0,0.0,1.0]]' in sent.content
        outputs.append(out.output)
    np.testing.assert_array_equal(outputs[0], outputs[1])


# --- errors from the real app ----------------------------------------------------------------


def test_validation_errors(sync_client: tl.Client) -> None:
    with pytest.raises(tl.ValidationError) as caught:
        sync_client.tensor_ops({"op": "no_such_op"})
    assert caught.value.status_code == 422
    assert caught.value.code == "validation_error"
    assert caught.value.request_id
    with pytest.raises(tl.ValidationError) as caught:
        sync_client.tensor_ops({"op": "clone", "x": "a"}, {"a": [[1, 2], [3]]})
    assert caught.value.code == "ragged_tensor"
    with pytest.raises(tl.ValidationError):
        sync_client.grad("sum(x)", x=np.array([1, 2]), wrt="x")  # an integer tensor


def test_limits_are_too_large_errors(sync_client: tl.Client) -> None:
    with pytest.raises(tl.TooLargeError) as caught:
        sync_client.tensor_ops({"op": "zeros", "size": [1_000_000, 1_000_000]})
    assert caught.value.code == "elements_limit"
    assert caught.value.limit == "max_elements"
    assert caught.value.requested == 10**12
    big = np.zeros(
        make_settings().limits.max_body_bytes // 8 + 1024
    )  # float64: over the body limit
    with pytest.raises(tl.TooLargeError) as caught:
        sync_client.tensor_ops({"op": "clone", "x": "a"}, {"a": big})
    assert caught.value.code == "body_size_limit"


def test_device_unavailable(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> None:
        await client.grad("sum(x)", x=[1.0], device="cuda:7")

    with pytest.raises(tl.DeviceUnavailableError) as caught:
        run_async(app, scenario)
    assert isinstance(caught.value, tl.ValidationError)
    assert caught.value.code == "device_unavailable"


def test_unauthorized_and_api_key() -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from service.main import create_app  # noqa: PLC0415

    guarded = TestClient(
        create_app(make_settings(api_keys=["s3cret"])), raise_server_exceptions=False
    )
    with tl.Client(http_client=guarded, api_key="") as anonymous:
        assert anonymous.health().ok  # /health stays open
        with pytest.raises(tl.UnauthorizedError) as caught:
            anonymous.info()
        assert caught.value.status_code == 401
    with (
        tl.Client(http_client=guarded, api_key="wrong") as wrong,
        pytest.raises(tl.UnauthorizedError),
    ):
        wrong.info()
    with tl.Client(http_client=guarded, api_key="s3cret") as client:
        assert client.info().auth_required


def test_compute_timeout(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> None:
        await client.benchmark(512, 512, 512, repeats=20, warmup=2, devices=["cpu"])

    settings = make_settings(request_timeout_s=0.001, calibration=FAST_CALIBRATION)
    with app_without_lifespan(settings) as slow, pytest.raises(tl.ComputeTimeoutError) as caught:
        run_async(slow, scenario, retries=0)
    assert caught.value.status_code == 504
    assert caught.value.code == "timeout"


def test_busy_device_is_rate_limited() -> None:
    import asyncio  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    async def main(busy: FastAPI) -> list[Any]:
        transport = httpx.ASGITransport(app=busy)
        async with tl.AsyncClient("http://testserver", transport=transport, retries=0) as client:
            calls = [client.benchmark(256, 256, 256, repeats=20, devices=["cpu"]) for _ in range(3)]
            return await asyncio.gather(*calls, return_exceptions=True)

    with app_without_lifespan(make_settings(max_inflight_per_device=1, queue_timeout_s=0)) as busy:
        results = asyncio.run(main(busy))
    limited = [r for r in results if isinstance(r, tl.RateLimitedError)]
    assert limited, results
    assert limited[0].status_code == 429
    assert limited[0].retry_after == 1.0
    assert any(isinstance(r, tl.BenchmarkResult) for r in results)


# --- construction ----------------------------------------------------------------------------


def test_client_options(monkeypatch: pytest.MonkeyPatch, test_client: Any) -> None:
    monkeypatch.setenv("TORCHLAB_URL", "http://example.invalid:9/")
    monkeypatch.setenv("TORCHLAB_API_KEY", "from-env")
    client = tl.Client()
    assert str(client.base_url) == "http://example.invalid:9"
    assert client.headers["Authorization"] == "Bearer from-env"
    assert "torchlab-client/" in client.headers["User-Agent"]
    client.close()
    monkeypatch.delenv("TORCHLAB_URL")
    with tl.Client(http_client=test_client) as over_test_client:
        assert str(over_test_client.base_url) == "http://testserver"
    assert not test_client.is_closed  # a given client is not closed
    with pytest.raises(ValueError, match="transport"):
        tl.Client(transport=test_client._transport, http_client=test_client)
    with pytest.raises(ValueError, match="retries"):
        tl.Client(retries=-1)
    assert repr(tl.Client("http://h:1")) == "Client(base_url='http://h:1')"


def test_as_torch_needs_nothing_more_here(sync_client: tl.Client) -> None:
    value, grads = sync_client.grad("sum(x * x)", x=torch.tensor([1.0, 2.0]), as_torch=True)
    assert isinstance(value, torch.Tensor)
    assert torch.equal(grads["x"], torch.tensor([2.0, 4.0]))


def test_png_results_as_pil(sync_client: tl.Client) -> None:
    picture = sync_client.activate_png(["sigmoid", "tanh", "relu", "softplus"])
    assert picture.headers["x-panel-layout"] == "1x4"
    image = picture.to_pil()
    assert image.size == (1400, 300)
