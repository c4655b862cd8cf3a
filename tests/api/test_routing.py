"""The request path in front of the routes: the index of paths without parameters, and the
direct call of a route that takes one JSON model (``service.api.routing``). Both are
shortcuts: every answer must be the one FastAPI's general way gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fastapi.routing
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from service.api.routing import StaticPathIndex

PROGRAM = {
    "inputs": {"a": [[1.5, -2.0], [3.25, 4.0]]},
    "steps": [{"op": "matmul", "x": "a", "y": "a", "out": "p"}],
}


@pytest.fixture
def general_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the requests that went FastAPI's general way (its dependency solving)."""
    calls: list[int] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    yield calls


def _without_timing(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(response.content)
    body.pop("elapsed_ms")
    return body


def test_a_plain_json_request_is_called_directly_and_answered_as_the_general_way(
    client: TestClient, general_calls: list[int]
) -> None:
    direct = client.post("/tensor/ops", json=PROGRAM)
    assert general_calls == []
    general = client.post("/tensor/ops", json=PROGRAM, params={"encoding": "json"})
    assert general_calls == [1]
    assert direct.status_code == general.status_code == 200
    assert direct.headers["content-type"] == general.headers["content-type"]
    assert _without_timing(direct) == _without_timing(general)
    a = torch.tensor(PROGRAM["inputs"]["a"])  # type: ignore[index]
    assert torch.equal(torch.tensor(_without_timing(direct)["outputs"]["p"]["data"]), a @ a)


@pytest.mark.parametrize(
    ("content_type", "params"),
    [
        ("application/json; charset=utf-8", {}),
        ("application/merge-patch+json", {}),  # FastAPI reads any +json as JSON
        ("application/json", {"encoding": "b64"}),
    ],
)
def test_other_requests_go_the_general_way(
    client: TestClient, general_calls: list[int], content_type: str, params: dict[str, str]
) -> None:
    response = client.post(
        "/tensor/ops",
        content=orjson.dumps(PROGRAM),
        headers={"content-type": content_type},
        params=params,
    )
    assert response.status_code == 200, response.text
    # The exact "application/json; charset=utf-8" is called directly, like the bare type.
    assert general_calls == ([] if content_type.startswith("application/json;") else [1])


@pytest.mark.parametrize(
    "body",
    [
        b'{"steps": [{"op": "nope"}]}',  # fails the model
        b'{"steps": [',  # not JSON
        b"[]",
    ],
)
def test_an_invalid_body_is_worded_by_the_general_way(client: TestClient, body: bytes) -> None:
    plain = client.post("/tensor/ops", content=body, headers={"content-type": "application/json"})
    general = client.post(
        "/tensor/ops",
        content=body,
        headers={"content-type": "application/json"},
        params={"encoding": "json"},
    )
    assert plain.status_code == general.status_code
    assert plain.status_code in (400, 422)  # not JSON / not valid
    assert plain.json() == general.json()


def test_the_index_holds_every_path_without_parameters(client: TestClient) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(index, StaticPathIndex)
    static = {
        (route.path, method)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, fastapi.routing.APIRoute) and not route.param_convertors
        for method in route.methods
    }
    indexed = {(path, method) for path, methods in index.index.items() for method in methods}
    assert indexed == static
    assert ("/tensor/ops", "POST") in indexed


def test_routes_the_index_does_not_hold_are_matched_as_before(client: TestClient) -> None:
    # A path with parameters, a method the path does not take, no such path, HEAD.
    assert client.get("/v2/models/relu").json()["name"] == "relu"
    wrong = client.get("/tensor/ops")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert client.post("/tensor/opz", json=PROGRAM).status_code == 404
    assert client.head("/health").status_code in (200, 405)


def test_a_request_through_the_index_is_counted_by_its_route(client: TestClient) -> None:
    def count() -> float:
        wanted = 'torchlab_requests_total{method="POST",route="/tensor/ops",status="200"} '
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(wanted):
                return float(line.removeprefix(wanted))
        return 0.0

    before = count()
    client.post("/tensor/ops", json=PROGRAM)
    assert count() == before + 1
