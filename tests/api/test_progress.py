"""Server-sent events of long work: ``Accept: text/event-stream`` on ``/regress/linear``,
``/regress/logistic``, ``/benchmark`` and ``/data/images``."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from httpx_sse import EventSource, ServerSentEvent
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from tests.conftest import FAST_CALIBRATION, make_settings
from tests.reliability.conftest import Server, start_server, stop_server

EVENTS = {"Accept": "text/event-stream"}


def read_events(response: httpx.Response) -> list[ServerSentEvent]:
    if response.status_code != 200:
        response.read()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    return list(EventSource(response).iter_sse())


def stream(client: TestClient, path: str, **kwargs: Any) -> list[ServerSentEvent]:
    with client.stream("POST", path, headers=EVENTS, **kwargs) as response:
        return read_events(response)


def check_order(events: list[ServerSentEvent], unit: str) -> tuple[list[dict[str, Any]], Any]:
    """Progress events then exactly one final event; progress monotonic and within total."""
    *progress, last = events
    assert progress, "no progress event"
    assert all(e.event == "progress" for e in progress)
    assert last.event in ("result", "error")
    data = [orjson.loads(e.data) for e in progress]
    done = [d["done"] for d in data]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert all(d["unit"] == unit and 0 < d["done"] <= d["total"] for d in data)
    assert len({d["total"] for d in data}) == 1
    return data, orjson.loads(last.data)


def without_timing(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "elapsed_ms"}


@pytest.fixture(scope="module", params=[True, False], ids=["workers", "threads"])
def app_client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = make_settings(isolate=request.param, max_inflight_per_device=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


LOGISTIC_SGD = {
    "dataset": "iris",
    "optimizer": "sgd",
    "epochs": 200,
    "lr": 0.05,
    "seed": 3,
}


def test_a_logistic_fit_streams_its_epochs_and_the_same_result(app_client: TestClient) -> None:
    events = stream(app_client, "/regress/logistic", json=LOGISTIC_SGD)
    progress, result = check_order(events, "epoch")
    assert events[-1].event == "result"
    plain = app_client.post("/regress/logistic", json=LOGISTIC_SGD)
    assert plain.status_code == 200
    assert without_timing(result) == without_timing(plain.json())
    # The last progress event is the last epoch, its loss the history's last value.
    assert progress[-1]["done"] == progress[-1]["total"] == LOGISTIC_SGD["epochs"]
    assert progress[-1]["loss"] == pytest.approx(result["loss_history"][-1])
    for event in progress:
        assert event["loss"] == pytest.approx(result["loss_history"][event["done"] - 1])


def test_lbfgs_reports_its_iterations(app_client: TestClient) -> None:
    body = {"dataset": "iris", "seed": 1}
    progress, result = check_order(stream(app_client, "/regress/logistic", json=body), "epoch")
    assert progress[-1]["done"] == len(result["loss_history"]) < progress[-1]["total"]
    assert progress[-1]["loss"] == pytest.approx(result["loss_history"][-1])


def test_a_gradient_descent_linear_fit_streams_its_epochs(app_client: TestClient) -> None:
    body = {"dataset": "exam", "method": "gd", "epochs": 300, "lr": 0.01, "seed": 5}
    progress, result = check_order(stream(app_client, "/regress/linear", json=body), "epoch")
    assert progress[-1]["done"] == 300
    assert progress[-1]["loss"] == pytest.approx(result["loss_history"][-1])
    plain = app_client.post("/regress/linear", json=body).json()
    assert without_timing(result) == without_timing(plain)
    # The closed form checks the fit itself: gradient descent got close to it.
    exact = app_client.post("/regress/linear", json={"dataset": "exam"}).json()
    np.testing.assert_allclose(
        result["model"]["coef"], exact["model"]["coef"], rtol=0.05, atol=0.05
    )


def test_a_closed_form_fit_streams_just_its_result(app_client: TestClient) -> None:
    events = stream(app_client, "/regress/linear", json={"dataset": "exam"})
    assert [e.event for e in events] == ["result"]
    plain = app_client.post("/regress/linear", json={"dataset": "exam"}).json()
    assert without_timing(orjson.loads(events[0].data)) == without_timing(plain)


def test_the_benchmark_streams_each_run_with_its_device(app_client: TestClient) -> None:
    body = {"m": 64, "k": 64, "n": 64, "repeats": 7, "warmup": 2, "seed": 9}
    events = stream(app_client, "/benchmark", json=body)
    progress, result = check_order(events, "run")
    assert progress[-1]["done"] == progress[-1]["total"] == len(result["results"]) * (1 + 2 + 7)
    assert {p["device"] for p in progress} <= {r["device"] for r in result["results"]}
    assert {p["run"] for p in progress} <= {"first", "warmup", "timed"}
    plain = app_client.post("/benchmark", json=body).json()
    # Timings differ from run to run; the product (seeded) and the plan do not.
    assert [r["norm"] for r in result["results"]] == [r["norm"] for r in plain["results"]]
    assert result.keys() == plain.keys()
    assert result["flops_per_run"] == plain["flops_per_run"] == 2 * 64**3


def _archive(count: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            picture = io.BytesIO()
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(picture, format="PNG")
            archive.writestr(f"{'ab'[i % 2]}/{i}.png", picture.getvalue())
    return buffer.getvalue()


def test_data_images_streams_each_picture(app_client: TestClient) -> None:
    body = {
        "dataset": "digits",
        "transforms": [{"name": "RandomRotation", "degrees": 30}],
        "batch_size": 8,
        "seed": 2,
    }
    progress, result = check_order(stream(app_client, "/data/images", json=body), "picture")
    assert progress[-1]["done"] == progress[-1]["total"] == sum(result["counts"].values())
    plain = app_client.post("/data/images", json=body).json()
    assert without_timing(result) == without_timing(plain)


def test_an_uploaded_archive_streams_too(app_client: TestClient) -> None:
    files = {"archive": ("set.zip", _archive(40), "application/zip")}
    progress, result = check_order(stream(app_client, "/data/images", files=files), "picture")
    assert progress[-1]["total"] == 40
    assert result["counts"] == {"a": 20, "b": 20}


def test_an_error_mid_way_is_an_error_event(app_client: TestClient) -> None:
    # Diverges after some epochs: the refusal comes from the work, not the plan.
    body = {"x": [[1.0], [2.0], [3.0], [4.0]], "y": [2.0, 4.1, 5.9, 8.2], "method": "gd"}
    body |= {"epochs": 500, "lr": 10.0, "standardize": False, "seed": 0}
    plain = app_client.post("/regress/linear", json=body)
    assert plain.status_code == 422 and plain.json()["code"] == "diverged"
    with app_client.stream("POST", "/regress/linear", headers=EVENTS, json=body) as response:
        events = read_events(response)
    assert events[-1].event == "error"
    error = orjson.loads(events[-1].data)
    assert error == {**plain.json(), "status": 422}
    assert all(e.event == "progress" for e in events[:-1])


def test_a_refusal_before_the_work_is_an_ordinary_error(app_client: TestClient) -> None:
    too_big = {"m": 100000, "k": 100000, "n": 100000}
    response = app_client.post("/benchmark", json=too_big, headers=EVENTS)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    invalid = app_client.post("/regress/logistic", json={"dataset": "nope"}, headers=EVENTS)
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("path", "body", "params"),
    [
        ("/regress/linear", {"dataset": "exam", "format": "png"}, {}),
        ("/regress/logistic", {"dataset": "iris", "format": "png"}, {}),
        ("/data/images", {"dataset": "digits", "format": "png"}, {}),
        ("/data/images", {"dataset": "digits"}, {"encoding": "binary"}),
    ],
)
def test_events_cannot_carry_a_picture_or_a_binary_body(
    app_client: TestClient, path: str, body: dict[str, Any], params: dict[str, str]
) -> None:
    response = app_client.post(path, json=body, params=params, headers=EVENTS)
    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"


def test_without_the_accept_header_nothing_changes(app_client: TestClient) -> None:
    response = app_client.post("/regress/logistic", json=LOGISTIC_SGD)
    assert response.headers["content-type"] == "application/json"
    either = {"Accept": "application/json, text/event-stream;q=0"}
    response = app_client.post("/regress/logistic", json=LOGISTIC_SGD, headers=either)
    assert response.headers["content-type"] == "application/json"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn with one compute slot: Starlette's TestClient reads a whole answer before it
    hands any of it over, so leaving a stream early needs a real server."""
    env = {
        "TORCHLAB_DEVICE": "cpu",
        "TORCHLAB_MAX_INFLIGHT_PER_DEVICE": "1",
        "TORCHLAB_QUEUE_TIMEOUT_S": "0.5",
        "TORCHLAB_MAX_FLOPS": "1e13",
        "TORCHLAB_CALIBRATION": json.dumps({"cpu/float32": 1e11, "cpu/float64": 5e10}),
    }
    server = start_server(env, tmp_path_factory.mktemp("live") / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


def test_closing_the_stream_frees_the_slot_at_once(live_server: Server) -> None:
    # One slot; a benchmark of seconds, abandoned after its first event: the next request
    # must not wait for it (its queue_timeout_s is 0.5 s: a 429 if it did).
    long = {"m": 1500, "k": 1500, "n": 1500, "repeats": 100, "dtype": "float64"}
    killed = cancelled_workers(live_server)
    with (
        httpx.Client(base_url=live_server.url, timeout=60) as client,
        client.stream("POST", "/benchmark", headers=EVENTS, json=long) as response,
    ):
        first = next(EventSource(response).iter_sse())
        assert first.event == "progress", first.data
    start = time.monotonic()
    small = {"m": 8, "k": 8, "n": 8, "repeats": 1}
    while True:  # the server learns of the closed connection within a moment
        after = httpx.post(f"{live_server.url}/benchmark", json=small, timeout=30)
        if after.status_code != 429 or time.monotonic() - start > 1.0:
            break
    assert after.status_code == 200, after.text
    assert time.monotonic() - start < 1.0
    # The work itself stopped: its worker was killed, not left to finish.
    assert cancelled_workers(live_server) == killed + 1


def cancelled_workers(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "torchlab_worker_kills_total" and sample.labels == {
                "device": "cpu",
                "reason": "cancelled",
            }:
                return sample.value
    return 0.0


def test_the_time_limit_ends_a_stream_with_a_504_event() -> None:
    # Rates ten thousand times too fast: the plan is admitted, then runs past its 1 s.
    settings = make_settings(calibration=FAST_CALIBRATION, request_timeout_s=1.0, max_flops=1e13)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        # Runs of tens of milliseconds: some are reported before the deadline, not all.
        long = {"m": 1000, "k": 1000, "n": 1000, "repeats": 100, "dtype": "float64"}
        events = stream(client, "/benchmark", json=long)
    assert events[-1].event == "error"
    error = orjson.loads(events[-1].data)
    assert error["status"] == 504 and error["code"] == "timeout"
    assert events[0].event == "progress"


def test_the_openapi_document_shows_the_stream(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/regress/linear", "/regress/logistic", "/benchmark", "/data/images"):
        responses = paths[path]["post"]["responses"]
        assert "text/event-stream" in responses["200"]["content"], path
        assert "application/json" in responses["200"]["content"], path
        assert "406" in responses, path
    assert "text/event-stream" not in paths["/conv"]["post"]["responses"]["200"]["content"]
