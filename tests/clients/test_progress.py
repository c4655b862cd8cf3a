"""``progress=`` on the client's long methods: the events reach the callable, a bar renders
without a terminal, and the result is the one a plain call returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.clients.conftest import Recorder, run_async, tl

LOGISTIC = {"dataset": "iris", "optimizer": "sgd", "epochs": 60, "lr": 0.05, "seed": 4}


def check_events(events: list[tl.ProgressEvent], unit: str) -> None:
    assert events, "no progress event"
    assert all(isinstance(e, tl.ProgressEvent) and e.unit == unit for e in events)
    done = [e.done for e in events]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert 0 < events[-1].fraction <= 1


def test_a_callable_receives_every_event_and_the_result_is_the_same(
    sync_client: tl.Client,
) -> None:
    events: list[tl.ProgressEvent] = []
    streamed = sync_client.logistic_regression(**LOGISTIC, progress=events.append)
    plain = sync_client.logistic_regression(**LOGISTIC)
    check_events(events, "epoch")
    assert events[-1].done == events[-1].total == LOGISTIC["epochs"]
    assert events[-1].info["loss"] == pytest.approx(plain.loss_history[-1])
    assert streamed.model.classes == plain.model.classes
    np.testing.assert_array_equal(streamed.model.coef, plain.model.coef)
    np.testing.assert_array_equal(streamed.loss_history, plain.loss_history)
    assert streamed.metrics == plain.metrics


def test_the_request_asks_for_events_and_a_json_result(
    recorded: tuple[TestClient, Recorder],
) -> None:
    test_client, recorder = recorded
    with tl.Client(http_client=test_client) as client:
        client.images(dataset="digits", batch_size=4, include_data=True, progress=lambda e: None)
        streamed = recorder.last
        client.images(dataset="digits", batch_size=4, include_data=True)
        plain = recorder.last
    assert streamed.headers["accept"] == "text/event-stream"
    assert streamed.url.params["encoding"] == "b64"  # an event holds JSON, not binary
    assert "text/event-stream" not in plain.headers["accept"]
    assert plain.url.params["encoding"] == "binary"


def test_each_long_method_reports_its_unit(sync_client: tl.Client) -> None:
    runs: list[tl.ProgressEvent] = []
    result = sync_client.benchmark(16, 16, 16, repeats=3, warmup=1, seed=0, progress=runs.append)
    check_events(runs, "run")
    assert runs[-1].done == runs[-1].total == 5 * len(result.results)
    assert {e.info["device"] for e in runs} <= {r.device for r in result.results}

    epochs: list[tl.ProgressEvent] = []
    fit = sync_client.linear_regression(
        dataset="exam", method="gd", epochs=40, lr=0.01, seed=1, progress=epochs.append
    )
    check_events(epochs, "epoch")
    assert epochs[-1].info["loss"] == pytest.approx(fit.loss_history[-1])

    pictures: list[tl.ProgressEvent] = []
    images = sync_client.images(dataset="digits", batch_size=8, progress=pictures.append)
    check_events(pictures, "picture")
    assert pictures[-1].done == sum(images.counts.values())


def test_a_bar_renders_without_a_terminal(
    sync_client: tl.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    result = sync_client.logistic_regression(**LOGISTIC, progress=True)
    err = capsys.readouterr().err
    assert f"{LOGISTIC['epochs']}/{LOGISTIC['epochs']}" in err
    assert "/regress/logistic" in err and "epoch" in err and "loss=" in err
    assert result.epochs == LOGISTIC["epochs"]


def test_an_error_mid_way_raises_what_a_plain_call_raises(sync_client: tl.Client) -> None:
    body: dict[str, Any] = {
        "method": "gd",
        "epochs": 500,
        "lr": 10.0,
        "standardize": False,
        "seed": 0,
    }
    x, y = [[1.0], [2.0], [3.0], [4.0]], [2.0, 4.1, 5.9, 8.2]
    with pytest.raises(tl.APIError) as plain:
        sync_client.linear_regression(x, y, **body)
    events: list[tl.ProgressEvent] = []
    with pytest.raises(tl.APIError) as streamed:
        sync_client.linear_regression(x, y, **body, progress=events.append)
    assert type(streamed.value) is type(plain.value)
    assert streamed.value.code == plain.value.code == "diverged"
    assert streamed.value.status_code == plain.value.status_code == 422
    assert streamed.value.message == plain.value.message


def test_a_refusal_before_the_work_is_the_usual_error(sync_client: tl.Client) -> None:
    with pytest.raises(tl.TooLargeError):
        sync_client.benchmark(100000, 100000, 100000, progress=lambda e: None)


def test_the_async_client_reports_the_same(app: FastAPI) -> None:
    events: list[tl.ProgressEvent] = []

    async def scenario(client: tl.AsyncClient) -> Any:
        return await client.logistic_regression(**LOGISTIC, progress=events.append)

    result = run_async(app, scenario)
    check_events(events, "epoch")
    assert events[-1].done == LOGISTIC["epochs"]
    assert events[-1].info["loss"] == pytest.approx(result.loss_history[-1])


def test_progress_must_be_a_bool_or_a_callable(sync_client: tl.Client) -> None:
    with pytest.raises(TypeError, match="progress"):
        sync_client.benchmark(8, 8, 8, progress="yes")  # type: ignore[arg-type]


def test_a_fit_that_converges_early_ends_its_bar_complete(
    sync_client: tl.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[tl.ProgressEvent] = []
    sync_client.logistic_regression(dataset="iris", seed=1, progress=events.append)
    stopped = events[-1].done
    assert stopped < events[-1].total  # L-BFGS converged before max_epochs
    sync_client.logistic_regression(dataset="iris", seed=1, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and f"{stopped}/{stopped}" in err
