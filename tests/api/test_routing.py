"""The request path in front of the routes: the index of paths without parameters, and the
direct call of a route that takes one JSON model (``service.api.routing``) from the fast
lane in front of the app's layers (``service.api.lane``). All are shortcuts: every answer
must be the one FastAPI's general way gives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any

import fastapi.routing
import orjson
import pytest
import torch
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

from service.api.lane import FastLane
from service.api.routing import (
    ORJSONRequest,
    ORJSONRoute,
    StaticPathIndex,
    match_by_segments,
    routes_by_segments,
)
from service.config import Settings
from service.main import create_app
from tests.api.test_edges import assert_error
from tests.conftest import make_settings

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
    assert client.head("/health").status_code == 200  # HEAD is GET without the body
    assert client.head("/v2/models/relu").status_code == 200
    assert client.head("/tensor/ops").headers["allow"] == "POST"


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


def test_a_head_request_is_counted_by_its_route(client: TestClient) -> None:
    client.head("/v2/models/relu")
    wanted = 'torchlab_requests_total{method="HEAD",route="/v2/models/{name}",status="200"} '
    assert any(line.startswith(wanted) for line in client.get("/metrics").text.splitlines())


OVER_LIMIT = {"steps": [{"op": "zeros", "size": [10**6, 10**6]}]}


def test_the_lane_answers_an_error_as_the_general_way(
    client: TestClient, general_calls: list[int]
) -> None:
    lane = client.post("/tensor/ops", json=OVER_LIMIT, headers={"X-Request-ID": "req-7"})
    assert general_calls == []
    general = client.post("/tensor/ops", json=OVER_LIMIT, params={"encoding": "json"})
    assert general_calls == [1]
    assert_error(lane, 413, "elements_limit")
    assert lane.json() == general.json()
    assert lane.headers["X-Request-ID"] == "req-7"
    assert len(general.headers["X-Request-ID"]) == 32


def test_the_lane_names_the_request_in_its_access_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="torchlab.access"):
        response = client.post("/tensor/ops", json=PROGRAM, headers={"X-Request-ID": "req-8"})
    assert response.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "torchlab.access"]
    assert any(line.startswith("req-8 POST /tensor/ops 200 ") for line in lines), lines


def test_a_path_cannot_write_lines_of_its_own_into_the_access_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="torchlab.access"):
        response = client.get("/x%0a0 GET /health 200 0.1ms%0d", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "torchlab.access"]
    assert lines == ["r-1 GET /x\\n0 GET /health 200 0.1ms\\r 404 " + lines[0].split(" 404 ")[1]]
    assert "\n" not in lines[0] and "\r" not in lines[0]


def test_an_unexpected_error_in_the_lane_is_the_apps_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret internals")

    monkeypatch.setattr("service.api.routes.tensors.run_compute", broken)
    response = client.post("/tensor/ops", json=PROGRAM, headers={"X-Request-ID": "req-9"})
    body = assert_error(response, 500, "internal_error")
    assert body["details"] == {"request_id": "req-9"}
    assert "secret" not in response.text


def test_the_lane_checks_api_keys() -> None:
    with TestClient(create_app(make_settings(api_keys=["k-secret"]))) as keyed:
        assert isinstance(keyed.app.middleware_stack, FastLane)  # type: ignore[attr-defined]
        assert_error(keyed.post("/tensor/ops", json=PROGRAM), 401, "unauthorized")
        wrong = {"X-API-Key": "k-nope"}
        assert_error(keyed.post("/tensor/ops", json=PROGRAM, headers=wrong), 401, "unauthorized")
        right = keyed.post("/tensor/ops", json=PROGRAM, headers={"X-API-Key": "k-secret"})
        assert right.status_code == 200


def test_a_cross_origin_request_gets_its_cors_headers(general_calls: list[int]) -> None:
    origin = "https://app.example"
    with TestClient(create_app(make_settings(cors_origins=[origin]))) as cors:
        response = cors.post("/tensor/ops", json=PROGRAM, headers={"Origin": origin})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert general_calls == [1]
        assert cors.post("/tensor/ops", json=PROGRAM).status_code == 200
        assert general_calls == [1]  # without an Origin: the lane


def test_an_app_with_a_layer_the_lane_does_not_know_has_no_lane(
    general_calls: list[int],
) -> None:
    seen: list[str] = []

    class Layer:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope.get("path", ""))
            await self.app(scope, receive, send)

    app = create_app(make_settings())
    app.add_middleware(Layer)
    with TestClient(app) as layered:
        assert layered.post("/tensor/ops", json=PROGRAM).status_code == 200
        assert not isinstance(app.middleware_stack, FastLane)
    assert "/tensor/ops" in seen
    assert general_calls == [1]


def test_a_chunked_body_goes_the_general_way(client: TestClient, general_calls: list[int]) -> None:
    def chunks() -> Iterator[bytes]:
        yield orjson.dumps(PROGRAM)

    response = client.post(
        "/tensor/ops", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert general_calls == [1]


def test_a_repeated_content_type_is_read_as_starlette_reads_it(client: TestClient) -> None:
    body = orjson.dumps(PROGRAM)
    headers = [("content-type", "text/plain"), ("content-type", "application/json")]
    plain = client.post("/tensor/ops", content=body, headers=headers)
    general = client.post("/tensor/ops", content=body, headers=headers, params={"encoding": "json"})
    assert plain.status_code == general.status_code == 415  # the first one counts
    assert plain.json() == general.json()


def test_a_path_with_parameters_is_matched_among_routes_of_its_length(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []
    matches = fastapi.routing.APIRoute.matches

    def counted(self: fastapi.routing.APIRoute, scope: Any) -> Any:
        tried.append(self.path)
        return matches(self, scope)

    monkeypatch.setattr(fastapi.routing.APIRoute, "matches", counted)
    body = {"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [-1, 2]}]}
    response = client.post("/v2/models/relu/infer", json=body)
    assert response.json()["outputs"][0]["data"] == [0.0, 2.0]
    assert tried and all(path.count("/") == 4 for path in tried), tried
    assert len(tried) < 8  # of 34 routes


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/relu"),
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/relu/infer"),  # 405: the route takes POST
        ("GET", "/v2/models/relu/ready/"),  # a trailing slash
        ("GET", "/v2/models/relu/versions/1/ready"),
        ("GET", "/v2/models/relu/versions/2/ready"),
        ("POST", "/v2/models/relu/versions/1"),
        ("GET", "/docs/assets/nope.js"),
        ("GET", "/a/b/c/d/e/f"),
        ("GET", "/openapi.json"),
    ],
)
def test_the_index_answers_as_the_router(client: TestClient, method: str, path: str) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    indexed = client.request(method, path, follow_redirects=False)
    client.app.router.middleware_stack = client.app.router.app  # type: ignore[attr-defined]
    try:
        general = client.request(method, path, follow_redirects=False)
    finally:
        client.app.router.middleware_stack = index  # type: ignore[attr-defined]
    assert indexed.status_code == general.status_code
    assert indexed.headers.get("allow") == general.headers.get("allow")
    assert indexed.headers.get("location") == general.headers.get("location")
    if general.headers.get("content-type", "").startswith("application/json"):
        assert indexed.json() == general.json()


def test_the_length_lists_keep_the_routers_order(client: TestClient) -> None:
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    routes = client.app.router.routes  # type: ignore[attr-defined]
    for length, listed in index.by_segments.items():
        positions = [routes.index(route) for route in listed]
        assert positions == sorted(positions)
        expected = [
            r
            for r in routes
            if not isinstance(r, fastapi.routing.APIRoute) or r.path.count("/") == length
        ]
        assert listed == expected


RELU = {"inputs": [{"name": "input", "shape": [3], "datatype": "FP32", "data": [-1, 0.5, 2]}]}


def _outputs(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["outputs"]


def test_a_small_inference_request_is_called_directly_with_any_content_type(
    client: TestClient, general_calls: list[int]
) -> None:
    raw = orjson.dumps(RELU)
    plain = client.post("/v2/models/relu/infer", content=raw)  # as tritonclient: no type
    typed = client.post(
        "/v2/models/relu/versions/1/infer", content=raw, headers={"content-type": "text/plain"}
    )
    assert general_calls == []
    general = client.post("/v2/models/relu/infer", content=raw, params={"x": "1"})
    assert general_calls == [1]
    assert _outputs(plain) == _outputs(typed) == _outputs(general)
    assert _outputs(plain)[0]["data"] == [0.0, 0.5, 2.0]
    assert plain.json()["model_name"] == typed.json()["model_name"] == "relu"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/nope/infer", RELU),  # no such model: the route's 404
        ("/v2/models/relu/versions/7/infer", RELU),  # no such version
        ("/v2/models/relu/infer", {"inputs": []}),  # invalid for the protocol
        ("/v2/models/relu/infer", {"inputs": [{"name": "input"}]}),
    ],
)
def test_an_inference_error_in_the_lane_is_the_general_ways(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    raw = orjson.dumps(body)
    lane = client.post(path, content=raw)
    general = client.post(path, content=raw, params={"x": "1"})
    assert lane.status_code == general.status_code >= 400
    assert lane.json() == general.json()


def test_a_binary_inference_request_goes_the_general_way(
    client: TestClient, general_calls: list[int]
) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    data = torch.tensor([-1.0, 3.0]).numpy().tobytes()
    response = client.post(
        "/v2/models/relu/infer",
        content=head + data,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert _outputs(response)[0]["data"] == [0.0, 3.0]
    assert general_calls == [1]


def test_a_route_that_may_match_any_length_is_in_every_list() -> None:
    app = fastapi.FastAPI()

    @app.get("/a/{x}")
    def one(x: str) -> str:
        return x

    @app.get("/files/{rest:path}")
    def files(rest: str) -> str:
        return rest

    @app.get("/a/{x}/b")
    def two(x: str) -> str:
        return x

    by_segments = routes_by_segments(app.router.routes)
    api = [r for r in app.router.routes if isinstance(r, fastapi.routing.APIRoute)]
    first, files_route, second = api
    assert [r for r in by_segments[2] if r in api] == [first, files_route]
    assert [r for r in by_segments[3] if r in api] == [files_route, second]
    scope = {"type": "http", "method": "GET", "path": "/files/x/y/z", "root_path": ""}
    assert match_by_segments(by_segments, scope) is None  # 4 segments: no list, the router's
    scope["path"] = "/files/x/y"
    found = match_by_segments(by_segments, scope)
    assert found is not None and found[0] is files_route
    assert found[1]["path_params"] == {"rest": "x/y"}


def test_a_direct_call_validates_constrained_path_parameters() -> None:
    router = fastapi.APIRouter(route_class=ORJSONRoute)
    seen: list[Any] = []

    @router.post("/plain/{name}")
    async def plain(name: str, request: Request) -> Response:
        seen.append(name)
        return Response(b"")

    @router.post("/short/{name}")
    async def short(name: Annotated[str, fastapi.Path(max_length=3)], request: Request) -> Response:
        seen.append(name)
        return Response(b"")

    @router.post("/number/{n}")
    async def number(n: int, request: Request) -> Response:
        seen.append(n)
        return Response(b"")

    def call(path: str, **params: str) -> Any:
        route = next(r for r in router.routes if isinstance(r, ORJSONRoute) and r.path == path)
        assert route.direct is not None
        scope = {"type": "http", "method": "POST", "headers": [], "path_params": params}
        return asyncio.run(route.direct(ORJSONRequest(scope)))

    assert call("/plain/{name}", name="any thing") is not None
    assert call("/short/{name}", name="abc") is not None
    assert call("/short/{name}", name="abcd") is None  # FastAPI's way words the 422
    assert call("/number/{n}", n="12") is not None
    assert call("/number/{n}", n="x") is None
    assert seen == ["any thing", "abc", 12]


def test_a_body_longer_than_the_lane_takes_goes_to_the_stack() -> None:
    # A server reads no more than Content-Length says; were it to give more, the lane hands
    # the request to the layers that count bodies, and reads no further itself.
    async def scenario() -> tuple[list[Any], list[str]]:
        lane = FastLane.__new__(FastLane)
        seen: list[str] = []

        async def stack(scope: Any, receive: Any, send: Any) -> None:
            while True:
                message = await receive()
                seen.append(message["type"])
                if not message.get("more_body"):
                    return

        lane.stack = stack
        lane.settings = Settings()
        piece = b" " * 10_000
        messages = [
            {"type": "http.request", "body": piece, "more_body": True},
            {"type": "http.request", "body": piece, "more_body": True},
            {"type": "http.request", "body": piece, "more_body": False},
        ]
        given: list[Any] = []

        async def receive() -> Any:
            given.append(1)
            return messages[len(given) - 1]

        route = next(
            r for r in create_app().router.routes if getattr(r, "path", "") == "/tensor/ops"
        )
        await lane._answer((route, route.direct, {}), (10_000, ""), {"type": "http"}, receive, None)  # type: ignore[arg-type]
        return given, seen

    given, seen = asyncio.run(scenario())
    assert len(given) == 3  # two read by the lane (over 16 KiB), the third by the stack
    assert seen == ["http.request"] * 3


def test_a_path_with_parameters_finds_the_routers_route_trying_one_matching(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every route of the app with parameters, at a path of its own: the index finds the
    route the router's own matching finds (the first in its order to match in full), and
    runs the matching of that route alone (the others miss on their patterns)."""
    routes = [
        route
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, fastapi.routing.APIRoute) and route.param_convertors
    ]
    assert len(routes) >= 10
    index = client.app.router.middleware_stack  # type: ignore[attr-defined]
    matched: list[Any] = []
    original = fastapi.routing.APIRoute.matches

    def counted(self: fastapi.routing.APIRoute, scope: Any) -> Any:
        matched.append(self)
        return original(self, scope)

    for route in routes:
        path = route.path_format.format(**{name: "relu" for name in route.param_convertors})
        method = sorted(route.methods)[0]
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        expected = next(
            r
            for r in client.app.routes  # type: ignore[attr-defined]
            if r.matches(scope)[0] is fastapi.routing.Match.FULL
        )
        with monkeypatch.context() as patched:
            patched.setattr(fastapi.routing.APIRoute, "matches", counted)
            matched.clear()
            found = index.find(scope)
        assert found is not None and found[0] is expected, path
        assert found[1]["path_params"] == {name: "relu" for name in route.param_convertors}
        assert matched == [expected], path
