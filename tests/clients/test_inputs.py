"""Inputs as people have them (issue 15): lists of arrays, numpy scalars, every wire dtype
kept and the others refused by name, pandas objects (column names as feature names), torch
tensors, and a bare string where a list of names goes. Each reproducer of the issue fails on
the client before it."""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torchlab_client as tl
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.clients.test_routes import fields, sent

CLONE = {"op": "clone", "x": "x"}


def clone(client: tl.Client, value: Any) -> Any:
    return client.tensor_ops(CLONE, {"x": value})["out"]


# --- arrays of every kind ----------------------------------------------------------------------


def test_a_list_of_arrays_is_one_tensor(sync_client: tl.Client) -> None:
    out = clone(sync_client, [np.ones(2), np.ones(2)])  # was a 422
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.ones((2, 2)))
    mixed = clone(sync_client, [np.arange(3, dtype=np.int16), np.arange(3, dtype=np.int16)])
    assert mixed.dtype == np.int16
    with pytest.raises(ValueError, match="do not stack"):
        clone(sync_client, [np.ones(2), np.ones(3)])


def test_a_list_of_torch_tensors_keeps_its_dtype(sync_client: tl.Client) -> None:
    tensors = [torch.tensor([1.5, -2.0], dtype=torch.bfloat16)] * 3
    out = sync_client.tensor_ops(CLONE, {"x": tensors}, as_torch=True)["out"]
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.stack(tensors))


@pytest.mark.parametrize(
    "scalar",
    [np.float64(1.0 / 3.0), np.float16(0.5), np.int32(-7), np.uint8(200), np.bool_(True)],
    ids=lambda s: type(s).__name__,
)
def test_numpy_scalars_keep_their_dtype(sync_client: tl.Client, scalar: np.generic) -> None:
    out = clone(sync_client, scalar)  # np.float64 arrived as float32
    assert out.shape == ()
    assert out.dtype == scalar.dtype
    assert out[()] == scalar


def test_numpy_scalars_elsewhere_are_numbers(sync_client: tl.Client) -> None:
    out = sync_client.tensor_ops(
        [{"op": "arange", "end": np.int64(4), "out": "a"}, {"op": "add", "x": "a", "y": 1.0}],
        seed=np.int64(0),
    )
    np.testing.assert_array_equal(out["out"], np.arange(4) + 1.0)


def test_inline_arrays_in_steps(sync_client: tl.Client) -> None:
    y = np.float64(2.0)  # a 0-d float64 tensor: torch's promotion keeps x's float32
    out = sync_client.tensor_ops(
        [
            tl.ops.add(np.ones(3, np.float32), y, out="a"),
            tl.ops.cat([np.zeros(2, np.int8), [np.int8(1), np.int8(2)]], out="b"),
            {"op": "to", "x": "a", "dtype": np.float16, "out": "c"},
        ],
        returns=["a", "b", "c"],
    )
    assert out["a"].dtype == np.float32
    np.testing.assert_array_equal(out["a"], [3.0, 3.0, 3.0])
    assert out["b"].dtype == np.int8
    np.testing.assert_array_equal(out["b"], [0, 0, 1, 2])
    assert out["c"].dtype == np.float16


@pytest.mark.parametrize(
    ("dtype", "cast"),
    [("uint16", "int32"), ("uint32", "int64"), ("uint64", "int64"), ("complex64", None)],
)
def test_dtypes_the_wire_lacks_are_refused_by_name(dtype: str, cast: str | None) -> None:
    with pytest.raises(TypeError, match=dtype) as caught:  # uint16/32 became int64 silently
        sent(lambda client: client.tensor_ops(CLONE, {"x": np.zeros(3, dtype)}))
    assert "inputs['x']" in str(caught.value)
    if cast:
        assert f"astype(np.{cast})" in str(caught.value)


def test_values_that_are_not_numbers_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="numpy dtype object"):
        sent(lambda client: client.tensor_ops(CLONE, {"x": np.array([1, "a"], dtype=object)}))
    with pytest.raises(TypeError, match="datetime64"):
        sent(lambda client: client.tensor_ops(CLONE, {"x": np.array(["2024-01-01"], "M8[D]")}))


def test_byte_order_and_layout_are_the_clients_business(sync_client: tl.Client) -> None:
    base = np.arange(24, dtype=">i4").reshape(4, 6)
    for array in (base, base.T, base[::2, 1::3], np.asfortranarray(base)):
        out = clone(sync_client, array)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, array)


# --- any array of a wire dtype round-trips (property) ------------------------------------------

WIRE_DTYPES = st.sampled_from(
    ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)


@st.composite
def wire_arrays(draw: st.DrawFn) -> np.ndarray:
    """An array of a wire dtype in any layout: either byte order, C or F order, strided."""
    name = draw(WIRE_DTYPES)
    order = draw(st.sampled_from("<>")) if np.dtype(name).itemsize > 1 else "|"
    dtype = np.dtype(name).newbyteorder(order)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    array: np.ndarray = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = np.repeat(array, 2, axis=0)[::2]
    elif layout == "transposed":
        array = array.T
    return array


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=wire_arrays(), threshold=st.sampled_from([0, 1 << 20]))
def test_any_wire_array_round_trips(
    test_client: TestClient, array: np.ndarray, threshold: int
) -> None:
    with tl.Client(http_client=test_client, b64_threshold=threshold) as client:
        out = clone(client, array)
    assert out.dtype == array.dtype.newbyteorder("=")
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)  # NaN equals NaN here
    if array.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(out), np.signbit(array))


# --- a bare string where a list goes ------------------------------------------------------------


def test_one_kernel_name_is_a_list_of_one(sync_client: tl.Client) -> None:
    picture = np.random.default_rng(0).integers(0, 255, (12, 12), endpoint=True).astype(np.uint8)
    result = sync_client.conv(picture, kernels="edge")  # was "unknown kernel 'e'"
    assert result.kernels == ["edge"]
    assert result.output.shape[1] == 1


def test_one_feature_name_is_a_list_of_one(sync_client: tl.Client) -> None:
    loader = sync_client.data_loader("iris", features="sepal length (cm)")  # was a 422
    assert loader.features == ["sepal length (cm)"]
    assert loader.n_features == 1


def test_every_list_of_names_takes_one_name() -> None:
    assert fields(sent(lambda c: c.benchmark(devices="cpu")))["devices"] == ["cpu"]
    assert fields(sent(lambda c: c.grad("sum(x)", "x", inputs={"x": [1.0]})))["wrt"] == ["x"]
    assert fields(sent(lambda c: c.tensor_ops(CLONE, returns="out")))["return"] == ["out"]
    cat = fields(sent(lambda c: c.tensor_ops({"op": "cat", "tensors": "a"})))["steps"][0]
    assert cat["tensors"] == ["a"]
    resize = {"name": "Resize", "size": [4, 4]}
    images = fields(sent(lambda c: c.images(dataset="digits", transforms=resize)))
    assert images["transforms"] == [resize]
    labels = fields(sent(lambda c: c.images(np.zeros((2, 2), np.uint8), labels="cat")))
    assert labels["labels"] == '["cat"]'
    kernel = fields(sent(lambda c: c.conv(input=np.ones((4, 4)), kernels=np.eye(3))))
    assert kernel["kernels"] == [{"data": np.eye(3).tolist(), "shape": [3, 3], "dtype": "float64"}]


# --- tables: pandas, and anything shaped like it -----------------------------------------------


class Frame:
    """A table as pandas' DataFrame looks to the client: ``columns`` and ``__array__``."""

    def __init__(self, columns: list[str], values: np.ndarray) -> None:
        self.columns = columns
        self.values = values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


class Series:
    """One named column, as pandas' Series looks to the client."""

    def __init__(self, name: str, values: np.ndarray) -> None:
        self.name = name
        self.index = range(len(values))
        self.values = values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


HOURS = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
SLEEP = np.array([8.0, 7.0, 7.5, 6.0, 6.5, 5.0, 5.5, 4.0])
SCORE = 10 * HOURS - 2 * SLEEP + 30


def check_named_fit(fit: tl.LinearRegressionResult) -> None:
    assert fit.model.features == ["hours", "sleep"]
    assert fit.model.targets == ["score"]
    np.testing.assert_allclose(fit.model.coef, [10.0, -2.0], atol=1e-9)
    assert {c["feature"] for c in fit.correlations} == {"hours", "sleep"}
    assert {c["target"] for c in fit.correlations} == {"score"}


def test_a_duck_typed_table_names_the_features(sync_client: tl.Client) -> None:
    table = Frame(["sleep", "hours"], np.stack([SLEEP, HOURS], axis=1))
    fit = sync_client.linear_regression(table, Series("score", SCORE), features=["hours", "sleep"])
    check_named_fit(fit)
    # Predictions take a table's columns by name, in the model's order.
    reordered = Frame(["sleep", "extra", "hours"], np.stack([SLEEP, SLEEP, HOURS], axis=1))
    np.testing.assert_allclose(sync_client.predict(fit, reordered).y, SCORE, rtol=1e-9)
    np.testing.assert_allclose(fit.model.predict(reordered), SCORE, rtol=1e-9)
    with pytest.raises(ValueError, match="'hours'"):
        fit.model.predict(Frame(["sleep", "hour"], np.ones((2, 2))))
    with pytest.raises(ValueError, match="did you mean 'hours'"):
        sync_client.linear_regression(table, SCORE, features=["hour"])


@pytest.fixture
def pd() -> Any:
    return pytest.importorskip("pandas")


def test_pandas_objects_are_inputs(sync_client: tl.Client, pd: Any) -> None:
    frame = pd.DataFrame({"hours": HOURS, "sleep": SLEEP})
    fit = sync_client.linear_regression(frame, pd.Series(SCORE, name="score"))  # a TypeError
    check_named_fit(fit)
    np.testing.assert_allclose(sync_client.predict(fit, frame[["sleep", "hours"]]).y, SCORE)

    out = sync_client.tensor_ops(CLONE, {"x": frame})["out"]
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, frame.to_numpy())
    result = sync_client.grad("sum(x**2)", inputs={"x": frame["hours"]})
    np.testing.assert_allclose(result.grads["x"], 2 * HOURS)

    labels = pd.Series(np.where(HOURS > 2, "pass", "fail"), name="result").astype("category")
    loader = sync_client.data_loader(x=frame, y=labels, batch_size=4, max_batches="all")
    assert (loader.features, loader.targets) == (["hours", "sleep"], ["result"])
    assert loader.classes == ["fail", "pass"]
    logistic = sync_client.logistic_regression(frame, labels)
    assert logistic.model.features == ["hours", "sleep"]
    np.testing.assert_array_equal(logistic.model.predict(frame), labels.to_numpy(str))


def test_text_labels_must_be_text(pd: Any) -> None:
    with pytest.raises(TypeError, match="mix text"):
        sent(lambda c: c.data_loader(x=HOURS[:3], y=pd.Series(["a", None, "b"])))


def test_tables_need_no_pandas() -> None:
    request = sent(lambda c: c.data_loader(x=Frame(["a"], np.ones((3, 1))), y=[0, 1, 0]))
    body = fields(request)
    assert body["x"]["dtype"] == "float64"
    assert "features" not in body


def test_non_finite_numpy_scalars_are_numbers() -> None:
    step = {"op": "full", "size": [2], "fill_value": np.float32(math.inf)}
    body = fields(sent(lambda c: c.tensor_ops(step)))
    assert body["steps"][0]["fill_value"] == "Infinity"


def test_nothing_is_sent_for_a_bad_input() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={})

    with (
        tl.Client("http://mock", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(TypeError),
    ):
        client.tensor_ops(CLONE, {"x": np.zeros(2, np.uint16)})
    assert calls == []
