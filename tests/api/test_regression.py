"""POST /regress/linear, /regress/logistic and /regress/predict through HTTP."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.main import create_app
from service.ops.data.datasets import EXAM_HOURS, EXAM_SCORES
from service.ops.regression.linear import BLOCKS_MIN_FLOPS
from tests.api.test_system import assert_error
from tests.conftest import make_settings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _b64(array: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype="<f8")
    return {
        "b64": base64.b64encode(data.tobytes()).decode(),
        "shape": list(data.shape),
        "dtype": "float64",
    }


def _csv(rows: list[list[object]]) -> bytes:
    return "\n".join(",".join(str(v) for v in row) for row in rows).encode()


# --- chapter 2: the exam data ----------------------------------------------------------------


def test_exam_equals_sklearn_and_numpy(client: TestClient) -> None:
    hours = np.array(EXAM_HOURS).reshape(-1, 1)
    scores = np.array(EXAM_SCORES, dtype=float)
    reference = LinearRegression().fit(hours, scores)
    r = np.corrcoef(hours[:, 0], scores)[0, 1]

    body = _ok(client.post("/regress/linear", json={"dataset": "exam"}))
    model = body["model"]
    assert model["kind"] == "linear" and model["features"] == ["hours"]
    assert model["coef"] == pytest.approx(reference.coef_.tolist(), abs=1e-4)
    assert model["intercept"] == pytest.approx(reference.intercept_, abs=1e-4)
    assert body["metrics"]["r2"] == pytest.approx(reference.score(hours, scores), abs=1e-4)
    assert body["pearson_r"] == pytest.approx(r, abs=1e-4)
    assert body["correlation"] == "strong"
    assert (body["n_train"], body["n_test"], body["method"]) == (20, 0, "lstsq")
    assert body["loss_history"] is None and body["metrics"]["r2_test"] is None
    assert body["device"] in ("cpu", "cuda:0")


def test_the_same_data_as_tensors(client: TestClient) -> None:
    by_name = _ok(client.post("/regress/linear", json={"dataset": "exam"}))
    as_lists = _ok(
        client.post("/regress/linear", json={"x": list(EXAM_HOURS), "y": list(EXAM_SCORES)})
    )
    assert as_lists["model"]["coef"] == pytest.approx(by_name["model"]["coef"], rel=1e-12)
    assert as_lists["model"]["features"] == ["x0"]


def test_gd_reaches_the_closed_forms_r2(client: TestClient) -> None:
    closed = _ok(client.post("/regress/linear", json={"dataset": "exam"}))
    trained = _ok(
        client.post(
            "/regress/linear", json={"dataset": "exam", "method": "gd", "epochs": 300, "seed": 0}
        )
    )
    assert trained["metrics"]["r2"] == pytest.approx(closed["metrics"]["r2"], abs=0.01)
    assert trained["epochs"] == len(trained["loss_history"]) == 300
    assert trained["loss_history"][0] > trained["loss_history"][-1]


def test_diabetes_coefficients_equal_sklearn_over_b64(client: TestClient) -> None:
    bunch = load_diabetes()
    reference = LinearRegression().fit(bunch.data, bunch.target)
    body = _ok(
        client.post(
            "/regress/linear",
            json={"x": _b64(bunch.data), "y": _b64(bunch.target), "test_size": 0.25, "seed": 0},
        )
    )
    assert (body["n_train"], body["n_test"]) == (331, 111)
    by_name = _ok(client.post("/regress/linear", json={"dataset": "diabetes"}))
    np.testing.assert_allclose(by_name["model"]["coef"], reference.coef_, rtol=1e-9)
    assert len(by_name["correlations"]) == 10 and by_name["pearson_r"] is None
    assert body["metrics"]["r2_test"] is not None


def test_linear_png_of_one_feature_and_of_gd(client: TestClient) -> None:
    response = client.post("/regress/linear", json={"dataset": "exam", "format": "png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    one = Image.open(io.BytesIO(response.content)).size
    response = client.post(
        "/regress/linear",
        json={"dataset": "diabetes", "method": "gd", "epochs": 50, "format": "png"},
    )
    two = Image.open(io.BytesIO(response.content)).size
    assert two[0] == 2 * one[0] and two[1] == one[1]  # predicted-vs-actual beside the loss


def test_a_csv_upload_with_form_fields(client: TestClient) -> None:
    rows = [["score", "hours"], *([s, h] for h, s in zip(EXAM_HOURS, EXAM_SCORES, strict=True))]
    response = client.post(
        "/regress/linear",
        data={"target": "score", "test_size": "0.25", "seed": "0"},
        files={"file": ("exam.csv", _csv(rows), "text/csv")},
    )
    body = _ok(response)
    assert body["model"]["features"] == ["hours"] and body["model"]["targets"] == ["score"]
    assert (body["n_train"], body["n_test"]) == (15, 5)


# --- chapter 4: logistic ---------------------------------------------------------------------


def test_breast_cancer_accuracy_within_a_point_of_sklearn(client: TestClient) -> None:
    bunch = load_breast_cancer()
    l2 = 1e-3
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=1 / (l2 * len(bunch.target)), max_iter=1000)
    ).fit(bunch.data, bunch.target)
    body = _ok(client.post("/regress/logistic", json={"dataset": "breast_cancer", "l2": l2}))
    assert body["metrics"]["accuracy"] == pytest.approx(
        reference.score(bunch.data, bunch.target), abs=0.01
    )
    assert body["multinomial"] is False and body["converged"] is True
    assert body["model"]["classes"] == [0, 1] and body["model"]["threshold"] == 0.5
    assert len(body["model"]["scaler"]["mean"]) == 30
    assert sum(map(sum, body["metrics"]["confusion_matrix"])) == 569


def test_string_labels_round_trip_through_predict(client: TestClient) -> None:
    x = [[h] for h in EXAM_HOURS]
    passed = ["pass" if s >= 60 else "fail" for s in EXAM_SCORES]
    fit = _ok(client.post("/regress/logistic", json={"x": x, "y": passed, "seed": 0}))
    assert fit["model"]["classes"] == ["fail", "pass"]
    predicted = _ok(client.post("/regress/predict", json={"model": fit["model"], "x": x}))
    assert predicted["kind"] == "logistic"
    assert set(predicted["y"]) <= {"fail", "pass"}
    accuracy = np.mean([a == b for a, b in zip(predicted["y"], passed, strict=True)])
    assert accuracy == pytest.approx(fit["metrics"]["accuracy"])
    proba = np.array(predicted["proba"]["data"])
    assert proba.shape == (20, 2) and np.allclose(proba.sum(1), 1)
    # The tutorial's rule: "pass" exactly where P(pass) > threshold.
    assert predicted["y"] == ["pass" if p > 0.5 else "fail" for p in proba[:, 1]]


def test_the_threshold_moves_the_decisions(client: TestClient) -> None:
    x = [[h] for h in EXAM_HOURS]
    y = [int(s >= 60) for s in EXAM_SCORES]
    positives = []
    for threshold in (0.1, 0.5, 0.9):
        fit = _ok(client.post("/regress/logistic", json={"x": x, "y": y, "threshold": threshold}))
        matrix = fit["metrics"]["confusion_matrix"]
        positives.append(matrix[0][1] + matrix[1][1])
        predicted = _ok(client.post("/regress/predict", json={"model": fit["model"], "x": x}))
        assert sum(predicted["y"]) == positives[-1]
    assert positives[0] >= positives[1] >= positives[2]
    assert positives[0] > positives[2]


def test_logistic_png(client: TestClient) -> None:
    sizes = []
    for features in (["petal length (cm)", "petal width (cm)"], None):
        body = {"dataset": "iris", "format": "png", "features": features}
        response = client.post("/regress/logistic", json=body)
        assert response.status_code == 200, response.text
        assert response.content.startswith(PNG_SIGNATURE)
        sizes.append(Image.open(io.BytesIO(response.content)).size)
    # Two features: the class regions beside the loss curve; otherwise the loss curve only.
    assert sizes[0][0] > 2 * sizes[1][0]


def test_logistic_from_a_csv_with_text_labels(client: TestClient) -> None:
    rows = [["hours", "result"], *([h, "pass" if s >= 60 else "fail"] for h, s in
            zip(EXAM_HOURS, EXAM_SCORES, strict=True))]  # fmt: skip
    response = client.post(
        "/regress/logistic",
        data={"features": '["hours"]'},
        files={"file": ("exam.csv", _csv(rows), "text/csv")},
    )
    assert _ok(response)["model"]["classes"] == ["fail", "pass"]


# --- predict ---------------------------------------------------------------------------------


def test_predict_with_a_linear_model(client: TestClient) -> None:
    fit = _ok(client.post("/regress/linear", json={"dataset": "exam"}))
    model = fit["model"]
    response = client.post(
        "/regress/predict", params={"encoding": "b64"}, json={"model": model, "x": [1.0, 3.0]}
    )
    y = _ok(response)["y"]
    values = np.frombuffer(base64.b64decode(y["b64"]), dtype="<f8")
    expected = np.array([1.0, 3.0]) * model["coef"][0] + model["intercept"]
    np.testing.assert_allclose(values, expected)
    assert _ok(response)["proba"] is None


def test_predict_with_several_targets(client: TestClient) -> None:
    fit = _ok(client.post("/regress/linear", json={"dataset": "linnerud"}))
    predicted = _ok(
        client.post("/regress/predict", json={"model": fit["model"], "x": [[5, 100, 50]]})
    )
    assert predicted["y"]["shape"] == [1, 3]


LINEAR = {"kind": "linear", "coef": [2.0], "intercept": 1.0, "features": ["hours"]}


@pytest.mark.parametrize(
    ("model", "x", "code"),
    [
        ({**LINEAR, "kind": "quadratic"}, [1.0], "validation_error"),
        ({**LINEAR, "classes": [0, 1]}, [1.0], "validation_error"),
        ({**LINEAR, "kind": "logistic"}, [1.0], "validation_error"),
        ({**LINEAR, "coef": [1.0, 2.0]}, [1.0], "invalid_model"),
        ({**LINEAR, "intercept": [1.0]}, [1.0], "invalid_model"),
        (LINEAR, [[1.0, 2.0]], "shape_mismatch"),
        (LINEAR, 3.0, "shape_mismatch"),
        (LINEAR, {"b64": None, "shape": [10**6, 10**6], "dtype": "float64"}, "invalid_base64"),
        (
            {"kind": "logistic", "classes": [0, 1, 2], "coef": [[1.0]] * 2, "intercept": [0, 0],
             "features": ["a"]},
            [1.0],
            "invalid_model",
        ),
    ],
)  # fmt: skip
def test_predict_refuses_a_model_of_the_wrong_kind_or_shape(
    client: TestClient, model: dict[str, Any], x: Any, code: str
) -> None:
    assert_error(client.post("/regress/predict", json={"model": model, "x": x}), 422, code)


# --- bad inputs and limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/regress/linear", {"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}, "length_mismatch"),
        ("/regress/linear", {"x": [1.0, "NaN", 3.0], "y": [1.0, 2.0, 3.0]}, "non_finite"),
        ("/regress/linear", {"x": [1.0, 2.0], "y": [1.0, "Infinity"]}, "non_finite"),
        ("/regress/linear", {"x": [1e200, 2.0], "y": [1.0, 2.0]}, "values_too_large"),
        ("/regress/linear", {"x": [[], []], "y": [1.0, 2.0]}, "no_features"),
        ("/regress/logistic", {"x": [1.0, 2.0, 3.0], "y": ["a", "a", "a"]}, "single_class"),
        ("/regress/linear", {"x": [1.0, 2.0], "y": ["a", "b"]}, "targets_not_numeric"),
        ("/regress/linear", {"x": [1.0, 2.0]}, "no_targets"),
        ("/regress/linear", {}, "no_data"),
        ("/regress/linear", {"dataset": "exam", "x": [1.0]}, "validation_error"),
        ("/regress/linear", {"dataset": "boston"}, "validation_error"),
        ("/regress/linear", {"dataset": "exam", "epochs": 10}, "validation_error"),
        ("/regress/linear", {"dataset": "exam", "method": "gd", "epochs": 10**6},
         "validation_error"),
        ("/regress/linear", {"dataset": "exam", "features": ["minutes"]}, "unknown_feature"),
        ("/regress/linear", {"dataset": "exam", "test_size": 0.95}, "too_few_samples"),
        ("/regress/logistic", {"dataset": "iris", "threshold": 0.3}, "threshold_not_binary"),
        ("/regress/logistic", {"dataset": "diabetes"}, "not_classification"),
        ("/regress/logistic", {"x": [1.0, 2.0], "y": [0.5, 1.0]}, "labels_not_integers"),
        ("/regress/logistic", {"dataset": "iris", "optimizer": "lbfgs", "batch_size": 8},
         "validation_error"),
    ],
)  # fmt: skip
def test_bad_inputs(client: TestClient, path: str, body: dict[str, Any], code: str) -> None:
    assert_error(client.post(path, json=body), 422, code)


def test_a_training_split_of_one_class_is_refused_as_single_class_data_is(
    client: TestClient,
) -> None:
    """The classes are counted on the samples that train: with seed 3 the two training
    samples of [0, 0, 0, 1] are both 0 (a fit on them answered 200 with coef 0)."""
    whole = client.post("/regress/logistic", json={"x": [[1], [2], [3], [4]], "y": [0, 0, 0, 0]})
    assert_error(whole, 422, "single_class")
    body = {"x": [[1], [2], [3], [4]], "y": [0, 0, 0, 1], "test_size": 0.5, "seed": 3}
    error = assert_error(client.post("/regress/logistic", json=body), 422, "single_class")
    assert "training split" in error["error"] and "seed" in error["error"]
    assert error["details"]["classes"] == [0] and error["details"]["n_train"] == 2
    labels = ["no", "no", "no", "yes"]
    text = client.post("/regress/logistic", json={**body, "y": labels})
    assert assert_error(text, 422, "single_class")["details"]["classes"] == ["no"]
    _ok(client.post("/regress/logistic", json={**body, "test_size": 0.25}))


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty_csv"),
        (b"hours,score\n", "empty_csv"),
        (b"hours,score\n1,10\n2,twenty\n", "csv_not_numeric"),
        (b"1,10\n2,20\n", "csv_no_header"),
    ],
)
def test_bad_csv_files(client: TestClient, content: bytes, code: str) -> None:
    response = client.post("/regress/linear", files={"file": ("data.csv", content, "text/csv")})
    body = assert_error(response, 422, code)
    if code == "csv_not_numeric":
        assert body["details"] == {"line": 3, "row": 2, "column": "score", "value": "twenty"}


def test_a_csv_over_the_column_limit(client: TestClient) -> None:
    header = ",".join(f"c{i}" for i in range(10_001))
    response = client.post(
        "/regress/linear", files={"file": ("wide.csv", f"{header}\n".encode(), "text/csv")}
    )
    body = assert_error(response, 413, "csv_columns_limit")
    assert body["details"]["limit"] == "max_csv_columns"


def test_an_unknown_target_among_many_long_columns_is_a_short_error(
    client: TestClient,
) -> None:
    """5,000 columns of 156 characters: the error quoted 50 of them in details and 20 in
    its message (11 KB); now at most 2 KB, naming the target and how many columns there
    are."""
    header = [f"n{i:04d}" + "x" * 151 for i in range(5000)]
    content = _csv([header, [1] * len(header)])
    response = client.post(
        "/regress/linear", data={"target": "zz"}, files={"file": ("w.csv", content, "text/csv")}
    )
    assert len(response.content) <= 2048, len(response.content)
    body = assert_error(response, 422, "unknown_column")
    assert "'zz'" in body["error"] and body["details"]["target"] == "zz"
    assert body["details"]["n_columns"] == 5000
    more = 5000 - len(body["details"]["columns"])
    assert f"… and {more:,} more" in body["error"]


def test_a_csv_over_the_configured_byte_limit() -> None:
    rows = "".join(f"{i},{2 * i}\n" for i in range(2000)).encode()
    with TestClient(create_app(make_settings(max_csv_bytes=4096))) as small:
        response = small.post(
            "/regress/linear", files={"file": ("big.csv", b"x,y\n" + rows, "text/csv")}
        )
        body = assert_error(response, 413, "csv_bytes_limit")
        assert body["details"]["allowed"] == 4096
        assert body["details"]["requested"] > 4096


def test_a_csv_and_a_dataset_together(client: TestClient) -> None:
    response = client.post(
        "/regress/linear",
        data={"dataset": "exam"},
        files={"file": ("d.csv", b"a,b\n1,2\n3,4\n", "text/csv")},
    )
    assert_error(response, 422, "several_sources")


def test_training_is_charged_to_the_flops_limit() -> None:
    with TestClient(create_app(make_settings(max_flops=1e8))) as small:
        body = {"dataset": "exam", "method": "gd", "epochs": 1000}
        error = assert_error(small.post("/regress/linear", json=body), 413, "flops_limit")
        assert error["details"]["limit"] == "max_flops"
        logistic = {"dataset": "digits", "epochs": 1000}
        assert_error(small.post("/regress/logistic", json=logistic), 413, "flops_limit")


def test_the_response_carries_no_non_finite_numbers(client: TestClient) -> None:
    body = _ok(client.post("/regress/linear", json={"x": [[1.0], [1.0], [1.0]], "y": [1, 2, 3]}))
    assert body["pearson_r"] is None and body["correlation"] is None
    assert all(v is None or math.isfinite(v) for v in body["metrics"].values())


# --- every loop of a fit charged before it runs ----------------------------------------------

CALIBRATION = {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
"""Fixed device rates: the predicted times do not depend on the machine."""


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    """An app with the default limits on tensors and FLOPs, on the CPU, at fixed rates."""
    settings = make_settings(
        device="cpu",
        max_elements=1 << 25,
        max_total_elements=1 << 27,
        max_flops=2e12,
        request_timeout_s=30.0,
        calibration=CALIBRATION,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/regress/linear", "/regress/logistic"])
def test_no_samples_beside_a_huge_feature_count_is_refused_at_once(
    default_client: TestClient, path: str
) -> None:
    body = {"x": {"b64": "", "shape": [0, 1 << 25], "dtype": "float32"}, "y": []}
    start = time.perf_counter()
    assert_error(default_client.post(path, json=body), 422, "no_samples")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/regress/linear", {"dataset": "diabetes", "method": "gd", "batch_size": 1}),
        ("/regress/logistic", {"dataset": "breast_cancer", "optimizer": "sgd", "batch_size": 1}),
        ("/regress/logistic", {"dataset": "breast_cancer", "optimizer": "adam", "batch_size": 4}),
    ],
)
def test_mini_batch_steps_are_charged_per_epoch_and_batch(
    default_client: TestClient, path: str, body: dict[str, Any]
) -> None:
    """Hundreds of samples in batches of one for 10,000 epochs: millions of optimizer steps
    of Python (hours), where the epochs' FLOPs alone looked like seconds."""
    start = time.perf_counter()
    response = default_client.post(path, json={**body, "epochs": 10_000})
    assert time.perf_counter() - start < 0.5
    assert response.status_code == 413, response.text
    assert response.json()["code"] in ("objects_limit", "over_time_budget")
    fewer = {**body, "epochs": 20, "batch_size": 64}
    assert default_client.post(path, json=fewer).status_code == 200


def test_confusion_matrices_are_charged_by_classes_squared() -> None:
    settings = make_settings(max_objects=100_000, calibration=CALIBRATION)
    rng = np.random.default_rng(0)
    with TestClient(create_app(settings)) as small:
        for classes, status in ((400, 413), (100, 200)):
            x = rng.normal(size=(2 * classes, 2))
            y = np.repeat(np.arange(classes), 2)
            body = {"x": _b64(x), "y": y.tolist(), "epochs": 2, "test_size": 0.5}
            response = small.post("/regress/logistic", json=body)
            assert response.status_code == status, response.text


def test_a_tall_fit_in_a_worker_equals_sklearn() -> None:
    """10000×40: a QR of 6.4e7 FLOPs, so in a worker with two threads the fit runs on one
    of them and its QR by two blocks of rows side by side (``service.ops.threads``)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10_000, 40)).astype(np.float32)
    y = (x.astype(np.float64) @ rng.standard_normal(40) + rng.standard_normal(10_000)).astype(
        np.float32
    )
    assert 4.0 * x.shape[0] * x.shape[1] ** 2 >= BLOCKS_MIN_FLOPS
    body = {
        "x": {"shape": list(x.shape), "dtype": "float32", "binary_data_size": x.nbytes},
        "y": {"shape": list(y.shape), "dtype": "float32", "binary_data_size": y.nbytes},
    }
    head = orjson.dumps(body)
    with TestClient(create_app(make_settings(worker_threads=2))) as client:
        response = client.post(
            "/regress/linear",
            content=head + x.tobytes() + y.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
    assert response.status_code == 200, response.text
    model = response.json()["model"]
    reference = LinearRegression().fit(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(model["coef"], reference.coef_, rtol=1e-9, atol=1e-12)
    assert math.isclose(model["intercept"], reference.intercept_, rel_tol=1e-9, abs_tol=1e-12)
