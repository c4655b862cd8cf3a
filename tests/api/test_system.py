"""/health, /info, /metrics, unknown routes, request ids, API keys and CORS."""

from __future__ import annotations

import importlib.metadata

import torch
from fastapi.testclient import TestClient

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
