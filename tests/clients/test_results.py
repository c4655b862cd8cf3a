"""Defaults and results (issue 15): answers in a compact encoding by default (binary since
issue 11), the DataLoader's batches
over a whole epoch and its classes, fitted models that predict here what
``/regress/predict`` predicts, short reprs and typed fields. Each reproducer of the issue
fails on the client before it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torchlab_client as tl
from fastapi import FastAPI
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.clients.conftest import run_async

# --- answers in binary (issue 11), base64 without it ---------------------------------------------


def test_answers_come_in_binary_by_default_and_base64_without_it(
    recorded: tuple[Any, Any],
) -> None:
    test_client, recorder = recorded
    with tl.Client(http_client=test_client) as client:
        out = client.tensor_ops({"op": "randn", "size": [3, 3], "seed": 0})  # asked for JSON
        assert recorder.last.url.params["encoding"] == "binary"
        assert out["out"].shape == (3, 3)
        assert out["out"].flags.writeable
        client.benchmark(8, 8, 8, devices="cpu", repeats=1)  # no tensors: nothing to ask
        assert "encoding" not in recorder.last.url.params
    with tl.Client(http_client=test_client, binary=False) as client:
        out = client.tensor_ops({"op": "randn", "size": [3, 3], "seed": 0})
        assert recorder.last.url.params["encoding"] == "b64"
        assert out["out"].shape == (3, 3)
        client.benchmark(8, 8, 8, devices="cpu", repeats=1)  # no tensors: nothing to ask
        assert "encoding" not in recorder.last.url.params
    with tl.Client(http_client=test_client, response_encoding="json") as client:
        client.tensor_ops({"op": "ones", "size": [2]})
        assert "encoding" not in recorder.last.url.params


# --- the DataLoader ----------------------------------------------------------------------------


def test_a_whole_epoch_of_batches(sync_client: tl.Client) -> None:
    loader = sync_client.data_loader(
        "iris", batch_size=32, shuffle=True, seed=0, max_batches="all", include_data=True
    )
    assert loader.n_batches == 5
    assert len(loader) == 5  # was one batch of five
    assert loader.complete
    seen = np.concatenate([batch.indices or [] for batch in loader])
    assert sorted(seen.tolist()) == list(range(150))
    assert [batch.x_shape[0] for batch in loader] == [32, 32, 32, 32, 22]


def test_one_batch_unless_asked_and_the_result_says_so(sync_client: tl.Client) -> None:
    loader = sync_client.data_loader("iris", batch_size=32)
    assert (len(loader), loader.n_batches, loader.complete) == (1, 5, False)


def test_an_epoch_longer_than_one_answer_warns(sync_client: tl.Client) -> None:
    with pytest.warns(RuntimeWarning, match="1001 batches") as caught:
        loader = sync_client.data_loader(x=np.arange(1001.0), batch_size=1, max_batches="all")
    assert not loader.complete
    # only the matching warning: the record also holds any other warning raised meanwhile
    (incomplete,) = [w for w in caught if "1001 batches" in str(w.message)]
    assert incomplete.filename == __file__


def test_classes_are_filled(sync_client: tl.Client) -> None:
    iris = sync_client.data_loader("iris", task="classification")
    assert iris.classes == [0, 1, 2]  # was None
    assert iris.class_names == ["setosa", "versicolor", "virginica"]
    given = sync_client.data_loader(x=np.ones((4, 2)), y=np.array([3, 1, 3, 1]))
    assert given.task == "classification"
    assert given.classes == [1, 3]
    named = sync_client.data_loader(x=np.ones((3, 1)), y=["b", "a", "b"])
    assert named.classes == ["a", "b"]
    regression = sync_client.data_loader("diabetes")
    assert regression.classes is None


# --- fitted models predict here ----------------------------------------------------------------


def same_predictions(client: tl.Client, fit: Any, x: Any) -> None:
    served = client.predict(fit, x)
    local = fit.model.predict(x)
    assert isinstance(local, np.ndarray)
    if fit.model.kind == "linear":
        np.testing.assert_allclose(local, served.y, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(local, served.y)
        np.testing.assert_allclose(fit.model.predict_proba(x), served.proba, rtol=1e-12, atol=1e-15)


def test_a_linear_fit_predicts_here(sync_client: tl.Client) -> None:
    fit = sync_client.linear_regression(dataset="exam")
    same_predictions(sync_client, fit, [0.5, 2.0, 6.0])
    several = sync_client.linear_regression(dataset="linnerud", test_size=0.25, seed=0)
    x = np.random.default_rng(0).normal(size=(5, several.model.n_features)) * 10 + 100
    same_predictions(sync_client, several, x)
    assert several.model.predict(x).shape == (5, 3)


def test_logistic_fits_predict_here(sync_client: tl.Client) -> None:
    binary = sync_client.logistic_regression(dataset="breast_cancer", threshold=0.3)
    assert binary.model.scaler is not None
    x = load_breast_cancer_rows()
    same_predictions(sync_client, binary, x)
    multinomial = sync_client.logistic_regression(dataset="iris")
    same_predictions(sync_client, multinomial, load_iris().data[::7])
    labels = ["low" if v < 2 else "high" for v in np.arange(8) / 2]
    text = sync_client.logistic_regression(np.arange(8.0)[:, None], labels)
    # x = 0..3 are "low", 4..7 "high": 3.5, on the boundary, is either by rounding.
    same_predictions(sync_client, text, [[0.0], [7.0]])
    assert text.model.predict([[0.0], [7.0]]).tolist() == ["low", "high"]
    with pytest.raises(TypeError, match="logistic"):
        sync_client.linear_regression(dataset="exam").model.predict_proba([1.0])


def load_breast_cancer_rows() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

    rows: np.ndarray = load_breast_cancer().data[::40]
    return rows


def test_l2_is_scikit_learns_c_as_documented(sync_client: tl.Client) -> None:
    """``l2 = 1 / (C · n_train)`` with standardised features: scikit-learn's pipeline."""
    iris = load_iris()
    c = 0.5
    fit = sync_client.logistic_regression(dataset="iris", l2=1 / (c * len(iris.target)))
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-10, max_iter=10_000))
    reference.fit(iris.data, iris.target)
    np.testing.assert_allclose(
        fit.model.predict_proba(iris.data), reference.predict_proba(iris.data), atol=2e-3
    )


def test_model_fields_are_arrays(sync_client: tl.Client) -> None:
    fit = sync_client.linear_regression(dataset="diabetes")
    assert isinstance(fit.model.coef, np.ndarray)
    assert fit.model.coef.dtype == np.float64
    assert isinstance(fit.model.intercept, float)
    prediction = sync_client.predict(fit, np.zeros((2, 10)))
    assert isinstance(prediction.y, np.ndarray)
    assert prediction.y.dtype == np.float64


# --- short reprs -------------------------------------------------------------------------------


def test_reprs_are_short(sync_client: tl.Client) -> None:
    picture = sync_client.activate_png(["sigmoid", "tanh"])
    text = repr(picture)  # printed every byte
    assert text.startswith("PNGImage(width=700, height=300, bytes=")
    assert len(text) < 80
    conv = sync_client.conv(input=np.random.default_rng(0).normal(size=(64, 64)), kernels="edge")
    text = repr(conv)
    assert "output=array(shape=[1, 1, 60, 60], dtype=float64)" in text
    assert len(text) < 400
    small = sync_client.tensor_ops({"op": "arange", "end": 3})
    assert "array([0, 1, 2])" in repr(small)
    fit = sync_client.linear_regression(dataset="exam")
    assert len(repr(fit)) < 800
    assert "raw" not in repr(fit)


def test_results_of_the_async_client_are_the_same(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> tl.LoaderResult:
        return await client.data_loader("wine", batch_size=100, max_batches="all")

    loader = run_async(app, scenario)
    assert loader.complete
    assert loader.classes == [0, 1, 2]
    assert loader.class_names is not None
    assert json.dumps(loader.classes)
