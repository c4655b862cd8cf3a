"""/health, /info, /metrics, unknown routes, request ids, API keys and CORS."""

from __future__ import annotations

import importlib.metadata

import opentelemetry.trace
import pytest
import torch
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.config import Settings
from service.main import create_app
from tests.conftest import make_settings


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert isinstance(body["error"], str) and body["error"]
    assert body["code"] == code
    return body


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_info_reports_versions_devices_and_limits(client: TestClient, settings: Settings) -> None:
    body = client.get("/info").json()
    assert body["torch_version"] == torch.__version__
    assert body["torchvision_version"] == importlib.metadata.version("torchvision")
    assert body["cuda_available"] == torch.cuda.is_available()
    assert body["cpu_threads"] == torch.get_num_threads()
    names = [device["name"] for device in body["devices"]]
    assert names[0] == "cpu"
    assert names[1:] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert body["default_device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert body["limits"] == settings.limits.model_dump()
    assert body["auth_required"] is False
    for device in body["devices"][1:]:
        assert 0 < device["free_memory_bytes"] <= device["total_memory_bytes"]


def test_unknown_route_is_404_in_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_error(client.get("/tensor/ops"), 405, "method_not_allowed")


def test_request_id_is_kept_or_made(client: TestClient) -> None:
    kept = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["X-Request-ID"] == "abc-123"
    made = client.get("/health")
    assert len(made.headers["X-Request-ID"]) == 32
    # A hostile id (header injection, huge) is replaced, not echoed.
    replaced = client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert replaced.headers["X-Request-ID"] != "x" * 500


def test_metrics_count_each_request_once_and_odd_methods_under_one_name(
    client: TestClient,
) -> None:
    def count(method: str, route: str, status: str) -> float:
        text = client.get("/metrics").text
        line = f'torchlab_requests_total{{method="{method}",route="{route}",status="{status}"}}'
        found = [row for row in text.splitlines() if row.startswith(line + " ")]
        return float(found[0].split()[-1]) if found else 0.0

    before = count("POST", "/tensor/ops", "200")
    for _ in range(3):
        assert client.post("/tensor/ops", json={"steps": [{"op": "arange", "end": 3}]}).is_success
    assert count("POST", "/tensor/ops", "200") == before + 3
    # A method token of the caller's own is counted as _OTHER: no caller adds a series.
    for i in range(5):
        assert client.request(f"BREW{i}", "/health").status_code == 405
    text = client.get("/metrics").text
    assert "BREW" not in text
    assert count("_OTHER", "/health", "405") == 5


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    client.post("/tensor/ops", json={"steps": [{"op": "zeros", "size": [10**6, 10**6]}]})
    client.get("/health")
    text = client.get("/metrics").text
    assert 'torchlab_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="/tensor/ops",status="413"' in text
    assert 'torchlab_limit_refusals_total{limit="max_elements"}' in text
    assert "torchlab_request_duration_seconds_bucket" in text
    assert "torchlab_compute_inflight" in text


def test_error_500_hides_the_traceback_and_names_the_request() -> None:
    app = create_app(make_settings())

    @app.get("/boom")
    def boom() -> None:
        raise KeyError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-42"})
    body = assert_error(response, 500, "internal_error")
    assert body["details"] == {"request_id": "req-42"}
    assert "secret" not in response.text and "Traceback" not in response.text


class TestApiKeys:
    KEYS = ["k1-secret", "k2-secret"]

    def client(self) -> TestClient:
        return TestClient(create_app(make_settings(api_keys=self.KEYS)))

    def test_health_needs_no_key(self) -> None:
        assert self.client().get("/health").status_code == 200

    def test_missing_or_wrong_key_is_401(self) -> None:
        client = self.client()
        assert_error(client.get("/info"), 401, "unauthorized")
        assert_error(client.get("/metrics", headers={"X-API-Key": "nope"}), 401, "unauthorized")
        body = {"steps": [{"op": "ones", "size": [2]}]}
        response = client.post("/tensor/ops", json=body, headers={"Authorization": "Bearer nope"})
        assert_error(response, 401, "unauthorized")

    def test_either_header_with_any_key_works(self) -> None:
        client = self.client()
        assert client.get("/info", headers={"X-API-Key": "k2-secret"}).status_code == 200
        assert client.get("/info", headers={"Authorization": "Bearer k1-secret"}).json()[
            "auth_required"
        ]

    def test_keys_from_the_environment_are_comma_separated(self, monkeypatch) -> None:
        monkeypatch.setenv("TORCHLAB_API_KEYS", "a, b,,c")
        assert Settings().api_keys == ["a", "b", "c"]


def test_cors_origins_from_settings() -> None:
    client = TestClient(create_app(make_settings(cors_origins=["https://app.example"])))
    preflight = client.options(
        "/tensor/ops",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Origin": "https://evil.example"}, ["origin"]),
        ({"Access-Control-Request-Method": "DELETE"}, ["method"]),
        ({"Access-Control-Request-Headers": "X-Evil"}, ["headers"]),
        (
            {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
            ["origin", "method"],
        ),
    ],
    ids=["origin", "method", "header", "origin-and-method"],
)
def test_a_refused_preflight_is_an_error_in_the_contracts_shape(
    headers: dict[str, str], refused: list[str]
) -> None:
    client = TestClient(create_app(make_settings(cors_origins=["https://app.example"])))
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST", **headers}
    body = assert_error(client.options("/tensor/ops", headers=asked), 400, "cors_refused")
    assert body["details"]["refused"] == refused
    assert body["details"]["origin"] == asked["Origin"]
    assert body["details"]["method"] == asked["Access-Control-Request-Method"]
    assert ("TORCHLAB_CORS_ORIGINS" in body["error"]) is ("origin" in refused)


def test_openapi_operation_ids_are_stable() -> None:
    schema = create_app(make_settings()).openapi()
    ids = {
        (path, method): op["operationId"]
        for path, item in schema["paths"].items()
        for method, op in item.items()
    }
    assert ids[("/health", "get")] == "health"
    assert ids[("/info", "get")] == "info"
    assert ids[("/metrics", "get")] == "metrics"
    assert ids[("/tensor/ops", "post")] == "tensor_ops"
    assert ids[("/benchmark", "post")] == "benchmark"


def test_every_model_and_field_is_documented() -> None:
    schema = create_app(make_settings()).openapi()
    missing = []
    for name, model in schema["components"]["schemas"].items():
        if not model.get("description"):
            missing.append(name)
        for field, spec in model.get("properties", {}).items():
            if field == "op":
                continue  # the discriminator: the model's own description says what it is
            if not (spec.get("description") or "$ref" in spec):
                missing.append(f"{name}.{field}")
    assert missing == []


def test_bodies_are_parsed_by_orjson(client: TestClient) -> None:
    # The standard library reads the non-JSON literal NaN; orjson (strict JSON) refuses it.
    body = b'{"inputs": {"a": [NaN]}, "steps": [{"op": "clone", "x": "a"}]}'
    response = client.post(
        "/tensor/ops", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "malformed_body")


def test_a_body_not_sent_as_json_is_415(client: TestClient) -> None:
    response = client.post(
        "/tensor/ops", content=b'{"steps": []}', headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("enabled", [False, True])
def test_fastapi_opentelemetry_only_when_asked_for(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an OpenTelemetry SDK's tracer provider in the process, FastAPI's own spans come
    only with ``TORCHLAB_OPENTELEMETRY``, each named after its route (the app's shortcuts
    to a route step aside for them); without it no request looks for the provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", lambda: provider)
    with TestClient(create_app(make_settings(opentelemetry=enabled))) as client:
        response = client.post("/tensor/ops", json={"steps": [{"op": "arange", "end": 3}]})
        assert response.json()["outputs"]["out"]["data"] == [0, 1, 2]
        assert client.get("/v2/models/relu").json()["name"] == "relu"
    names = [span.name for span in exporter.get_finished_spans()]
    if enabled:
        assert {"POST /tensor/ops", "GET /v2/models/{name}"} <= set(names), names
    else:
        assert names == []
