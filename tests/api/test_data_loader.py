"""GET /datasets and POST /data/loader (chapter 7.1) through HTTP."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn import datasets as sk
from torch.utils.data import DataLoader, TensorDataset

from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _loader(client: TestClient, **body: Any) -> dict[str, Any]:
    return _ok(client.post("/data/loader", json=body))


def test_datasets_lists_every_builtin(client: TestClient) -> None:
    listed = {d["name"]: d for d in _ok(client.get("/datasets"))["datasets"]}
    assert list(listed) == [
        "exam", "iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud",
        "sample_images",
    ]  # fmt: skip
    for name in ("iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud"):
        bunch = getattr(sk, f"load_{name}")()
        assert listed[name]["n_samples"] == bunch.data.shape[0]
        assert listed[name]["n_features"] == bunch.data.shape[1]
        assert listed[name]["feature_names"] == list(bunch.feature_names)
    exam = listed["exam"]
    assert (exam["n_samples"], exam["n_features"], exam["task"]) == (20, 1, "regression")
    assert listed["sample_images"]["task"] == "images"
    assert listed["breast_cancer"]["class_names"] == ["malignant", "benign"]


def test_the_tutorials_classification_batch(client: TestClient) -> None:
    body = _loader(client, dataset="iris", batch_size=10, shuffle=True, seed=0)
    assert (body["x_dtype"], body["y_dtype"], body["task"]) == (
        "float32",
        "int64",
        "classification",
    )
    assert body["batches"] == [{"index": 0, "x_shape": [10, 4], "y_shape": [10]}]
    assert (body["n_samples"], body["n_features"], body["n_batches"]) == (150, 4, 15)


def test_the_tutorials_regression_batch(client: TestClient) -> None:
    # diabetes stands in for the tutorial's Boston housing, which scikit-learn removed.
    body = _loader(client, dataset="diabetes", batch_size=64, shuffle=True, seed=0)
    assert (body["x_dtype"], body["y_dtype"], body["task"]) == ("float32", "float32", "regression")
    assert body["batches"][0]["x_shape"] == [64, 10] and body["batches"][0]["y_shape"] == [64]


@pytest.mark.parametrize(("drop_last", "batches", "last"), [(False, 3, 22), (True, 2, 64)])
def test_batch_counts_with_and_without_drop_last(
    client: TestClient, drop_last: bool, batches: int, last: int
) -> None:
    body = _loader(client, dataset="iris", batch_size=64, drop_last=drop_last, max_batches=10)
    assert body["n_batches"] == len(body["batches"]) == batches
    assert body["batches"][-1]["x_shape"] == [last, 4]


def _first_batch(client: TestClient, seed: int) -> dict[str, Any]:
    body = _loader(client, dataset="wine", batch_size=8, shuffle=True, seed=seed, include_data=True)
    batch: dict[str, Any] = body["batches"][0]
    return batch


def test_a_seed_gives_the_same_batches_as_torch(client: TestClient) -> None:
    first, again = _first_batch(client, 7), _first_batch(client, 7)
    assert first == again
    other = _first_batch(client, 8)
    assert other["indices"] != first["indices"] and other["x"] != first["x"]
    # The same loader in this process, seeded the same way, yields the same samples.
    bunch = sk.load_wine()
    dataset = TensorDataset(
        torch.from_numpy(bunch.data.astype(np.float32)),
        torch.from_numpy(bunch.target.astype(np.int64)),
        torch.arange(len(bunch.target)),
    )
    loader = DataLoader(
        dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7)
    )
    x, y, indices = next(iter(loader))
    assert first["indices"] == indices.tolist()
    assert first["y"]["data"] == y.tolist() and first["y"]["dtype"] == "int64"
    np.testing.assert_array_equal(np.array(first["x"]["data"], dtype=np.float32), x.numpy())


def test_without_shuffle_batches_are_in_order(client: TestClient) -> None:
    body = _loader(client, dataset="exam", batch_size=6, include_data=True, max_batches=4)
    assert [b["indices"] for b in body["batches"]] == [
        list(range(0, 6)), list(range(6, 12)), list(range(12, 18)), [18, 19],
    ]  # fmt: skip
    assert body["batches"][0]["x"]["data"] == [[0.5], [0.75], [1.0], [1.25], [1.5], [1.75]]


def test_string_labels_become_class_indices(client: TestClient) -> None:
    body = _loader(
        client, x=[[1.0], [2.0], [3.0]], y=["b", "a", "b"], batch_size=3, include_data=True
    )
    assert body["classes"] == ["a", "b"] and body["task"] == "classification"
    assert body["batches"][0]["y"] == {"shape": [3], "dtype": "int64", "data": [1, 0, 1]}


def test_tasks_and_data_without_targets(client: TestClient) -> None:
    floats = _loader(client, x=[[1.0], [2.0]], y=[0.5, 1.5])
    assert floats["task"] == "regression" and floats["y_dtype"] == "float32"
    as_classes = _loader(client, x=[[1.0], [2.0]], y=[1.0, 3.0], task="classification")
    assert as_classes["y_dtype"] == "int64" and as_classes["classes"] is None
    no_y = _loader(client, x=[[1.0, 2.0]], batch_size=4)
    assert no_y["y_dtype"] is None and no_y["batches"][0]["y_shape"] is None
    assert no_y["targets"] == []
    linnerud = _loader(client, dataset="linnerud", batch_size=5)
    assert linnerud["batches"][0]["y_shape"] == [5, 3]


def test_b64_batches(client: TestClient) -> None:
    response = client.post(
        "/data/loader",
        params={"encoding": "b64"},
        json={"dataset": "iris", "batch_size": 2, "include_data": True},
    )
    x = _ok(response)["batches"][0]["x"]
    values = np.frombuffer(base64.b64decode(x["b64"]), dtype="<f4").reshape(x["shape"])
    np.testing.assert_array_equal(values, sk.load_iris().data[:2].astype(np.float32))


def test_a_csv_upload(client: TestClient) -> None:
    content = b"a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n"
    response = client.post(
        "/data/loader",
        data={"batch_size": "2", "include_data": "true", "target": "label"},
        files={"file": ("pets.csv", content, "text/csv")},
    )
    body = _ok(response)
    assert body["dataset"] == "pets.csv" and body["features"] == ["a", "b"]
    assert body["classes"] == ["cat", "dog"]
    assert body["batches"][0]["x"]["data"] == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"x": [[1.0]], "y": [0.5], "task": "classification"}, "labels_not_integers"),
        ({"x": [[1.0]], "y": ["a"], "task": "regression"}, "targets_not_numeric"),
        ({"x": [[1.0], [2.0]], "y": [1.0]}, "length_mismatch"),
        ({"x": [["NaN"]], "y": [1.0]}, "non_finite"),
        ({"x": [[1e50]], "y": [1.0]}, "values_too_large"),
        ({"x": [], "y": [], "shuffle": True}, "no_samples"),
        ({"dataset": "iris", "batch_size": 0}, "validation_error"),
        ({"dataset": "iris", "max_batches": 10_000}, "validation_error"),
        ({}, "no_data"),
        ({"dataset": "iris", "device": "cuda:9"}, "device_unavailable"),
    ],
)
def test_bad_loader_inputs(client: TestClient, body: dict[str, Any], code: str) -> None:
    assert_error(client.post("/data/loader", json=body), 422, code)


def test_a_csv_label_where_numbers_are_needed(client: TestClient) -> None:
    response = client.post(
        "/data/loader",
        data={"task": "regression"},
        files={"file": ("d.csv", b"a,y\n1,2\n3,oops\n", "text/csv")},
    )
    body = assert_error(response, 422, "csv_not_numeric")
    assert body["details"]["column"] == "y" and body["details"]["value"] == "oops"


ERROR_BODY_BYTES = 2048
"""The most an error about unknown columns may weigh, however many or long the columns."""
WIDE_HEADERS = {
    "5,000 names of 156 characters": [f"n{i:04d}" + "x" * 151 for i in range(5000)],
    "one name of 100,000 characters": ["h" * 100_000, "a", "b"],
    "5,000 short names": [f"c{i}" for i in range(5000)],
}


@pytest.mark.parametrize("header", WIDE_HEADERS.values(), ids=list(WIDE_HEADERS))
def test_errors_about_columns_quote_a_bounded_part_of_the_header(
    client: TestClient, header: list[str]
) -> None:
    """An unknown feature or target is named; the columns there are are listed in part,
    each name clipped, with how many more there are (19 KB and 11 KB bodies before)."""
    content = f"{','.join(header)}\n{','.join('1' for _ in header)}\n".encode()
    files = {"file": ("wide.csv", content, "text/csv")}

    missing = client.post("/data/loader", data={"features": '["nope"]'}, files=files)
    assert len(missing.content) <= ERROR_BODY_BYTES, len(missing.content)
    body = assert_error(missing, 422, "unknown_feature")
    assert "'nope'" in body["error"] and body["details"]["unknown"] == ["nope"]
    listed = body["details"]["available"]
    assert body["details"]["n_available"] == len(header) - 1 and listed
    assert all(len(name) <= 250 for name in listed)
    if len(listed) < len(header) - 1:
        assert f"… and {len(header) - 1 - len(listed):,} more" in body["error"]

    target = client.post("/data/loader", data={"target": "zz"}, files=files)
    assert len(target.content) <= ERROR_BODY_BYTES, len(target.content)
    body = assert_error(target, 422, "unknown_column")
    assert "'zz'" in body["error"] and body["details"]["target"] == "zz"
    listed = body["details"]["columns"]
    assert body["details"]["n_columns"] == len(header) and listed
    if len(listed) < len(header):
        assert f"… and {len(header) - len(listed):,} more" in body["error"]


def test_included_data_counts_toward_the_limits() -> None:
    with TestClient(create_app(make_settings(max_total_elements=1000))) as small:
        _ok(small.post("/data/loader", json={"dataset": "iris", "batch_size": 150}))
        body = {"dataset": "iris", "batch_size": 150, "include_data": True}
        assert_error(small.post("/data/loader", json=body), 413, "total_elements_limit")


CALIBRATION = {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
"""Fixed device rates: the predicted times do not depend on the machine."""
DEFAULT_SIZES = {"max_elements": 1 << 25, "max_total_elements": 1 << 27, "max_flops": 2e12}


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    """An app with the default sizes of tensors and FLOPs and fixed device rates."""
    settings = make_settings(**DEFAULT_SIZES, max_body_bytes=64 << 20, calibration=CALIBRATION)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_no_samples_beside_a_huge_feature_count_is_refused_at_once(
    default_client: TestClient,
) -> None:
    """[0, 2**25] passes the codec (no dimension is longer than max_elements) but holds no
    sample: refused before a name per column is made (it took seconds and gigabytes)."""
    for shape, code in (([0, 1 << 25], "no_samples"), ([1 << 25, 0], "no_features")):
        body = {"x": {"b64": "", "shape": shape, "dtype": "float32"}, "batch_size": 1}
        start = time.perf_counter()
        assert_error(default_client.post("/data/loader", json=body), 422, code)
        assert time.perf_counter() - start < 0.5
    body = {"x": {"b64": "", "shape": [0, 1 << 26], "dtype": "float32"}, "batch_size": 1}
    assert_error(default_client.post("/data/loader", json=body), 413, "elements_limit")
    y = {"b64": "", "shape": [0, 1 << 25], "dtype": "float32"}
    body = {"x": {"b64": "", "shape": [0, 1], "dtype": "float32"}, "y": y}
    assert_error(default_client.post("/data/loader", json=body), 422, "no_samples")


def test_names_per_column_are_charged_as_objects() -> None:
    settings = make_settings(max_objects=3000, calibration=CALIBRATION)
    with TestClient(create_app(settings)) as small:
        wide = np.zeros((2, 3000), np.float32)
        body = {
            "x": {
                "b64": base64.b64encode(wide.tobytes()).decode(),
                "shape": [2, 3000],
                "dtype": "float32",
            }
        }
        start = time.perf_counter()
        error = assert_error(small.post("/data/loader", json=body), 413, "objects_limit")
        assert time.perf_counter() - start < 0.5
        assert error["details"]["limit"] == "max_objects"
        narrow = wide[:, :1000]
        body["x"] = {
            "b64": base64.b64encode(narrow.tobytes()).decode(),
            "shape": [2, 1000],
            "dtype": "float32",
        }
        answer = _loader(small, **body)
        assert len(answer["features"]) == 1000 and answer["features"][-1] == "x999"


def test_a_batch_of_every_sample_is_gathered_at_once(default_client: TestClient) -> None:
    """A batch is gathered by indexing the dataset's tensors (no Python object per sample);
    listing its sample indices makes one number per sample, charged as objects."""
    n = 1 << 21
    x = np.arange(n, dtype=np.float32)
    wire = {"b64": base64.b64encode(x.tobytes()).decode(), "shape": [n], "dtype": "float32"}
    body = {"x": wire, "batch_size": n, "shuffle": True, "seed": 3}
    start = time.perf_counter()
    answer = _loader(default_client, **body)
    assert time.perf_counter() - start < 5.0
    assert answer["n_batches"] == 1 and answer["batches"][0]["x_shape"] == [n, 1]
    start = time.perf_counter()
    listed = default_client.post("/data/loader", json={**body, "include_data": True})
    assert_error(listed, 413, "objects_limit")
    assert time.perf_counter() - start < 1.0
